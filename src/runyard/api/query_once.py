"""A query parameter or header that takes one value, given twice, is refused (422 naming it).

Starlette keeps the last of a query's values and says nothing: `?name=a.csv&name=b.csv`
stored an upload named `b.csv`, `?offset=1&offset=2` read from 2; of a header it reads the
first (`Last-Event-ID: 1` then `Last-Event-ID: 5` resumed after 1, where a proxy that joins
them sends `1, 5`, which is refused). A proxy, a cache or an audit log in front of the server
may read another one, and what the server did would not be what they saw asked. A parameter
declared as a list (`state=queued&state=running`) takes them all, as declared.

Which parameters take one value is read from the OpenAPI document, the one description of
every route's parameters the server publishes and holds itself to (api/inputs.py); a
WebSocket route, which the document does not hold, from its own declaration. A WebSocket's
handshake is refused as a request is (api/problems.py answers it).
"""

from __future__ import annotations

import typing
from collections import Counter
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from starlette.requests import HTTPConnection

from runyard.errors import InvalidInputError

_Key = tuple[str, str]  # (method, path template)
# a route's one-value query parameters, and its one-value headers (lower case: as declared)
_Single = tuple[frozenset[str], dict[str, str]]
# Headers given twice that are not refused here: Prefer's value is a list, which may come in
# several lines read as one joined by commas (RFC 9110, 5.3; RFC 7240), as routes/runs.py
# reads it; a download answers Range and If-Range lines as RFC 9110 (14) has it, itself
# (api/byte_ranges.py: Range given twice is its 400, If-Range twice a false condition)
OWN_RULES = frozenset({"prefer", "range", "if-range"})


async def one_value_each(conn: HTTPConnection) -> None:
    """A dependency of every route: past the router, so the route's declaration is known."""
    scope = conn.scope
    names = [name for name, _ in scope["headers"]]
    repeated_headers = len(set(names)) != len(names)  # rare: counted only then
    if not scope.get("query_string") and not repeated_headers:
        return
    queries = _repeated(name for name, _ in conn.query_params.multi_items())
    headers = _repeated(n.decode("latin-1").lower() for n in names) if repeated_headers else {}
    if not queries and not headers:
        return
    route = scope.get("route")
    single = _single_valued(conn.app, route, scope.get("method", "websocket").lower())
    if single is None:
        return
    for name, n in queries.items():
        if name in single[0]:
            raise InvalidInputError(
                f"query parameter {name!r} takes one value; it was given {n} times",
                field=f"query.{name}",
            )
    for name, n in headers.items():
        if (shown := single[1].get(name)) is not None and name not in OWN_RULES:
            raise InvalidInputError(
                f"header {shown!r} takes one value; it was given {n} times",
                field=f"header.{shown}",
            )


def _repeated(names: Iterable[str]) -> dict[str, int]:
    return {name: n for name, n in Counter(names).items() if n > 1}


def _single_valued(app: FastAPI, route: Any, method: str) -> _Single | None:
    # the template as the OpenAPI document keys it (`{path}`, not `{path:path}`)
    path = getattr(route, "path_format", None)
    if path is None:
        return None
    cache: dict[_Key, _Single] = app.state.__dict__.setdefault("_single_valued", {})
    key = (method, path)
    found = cache.get(key)
    if found is None:
        if method == "websocket":
            found = _declared(getattr(route, "dependant", None))
        else:
            op = app.openapi().get("paths", {}).get(path, {}).get(method, {})
            single = [p for p in op.get("parameters", []) if not _is_list(p.get("schema", {}))]
            found = (
                frozenset(p["name"] for p in single if p.get("in") == "query"),
                {p["name"].lower(): p["name"] for p in single if p.get("in") == "header"},
            )
        cache[key] = found
    return found


def _is_list(schema: dict[str, Any]) -> bool:
    return any(b.get("type") == "array" for b in schema.get("anyOf", [schema]))


def _declared(dependant: Dependant | None) -> _Single:
    """A WebSocket route's one-value query parameters and headers, from its declaration and
    its dependencies'."""
    query: set[str] = set()
    header: dict[str, str] = {}
    pending = [dependant] if dependant is not None else []
    while pending:
        current = pending.pop()
        query.update(f.alias for f in current.query_params if not _is_sequence(f))
        header.update(
            (f.alias.lower(), f.alias) for f in current.header_params if not _is_sequence(f)
        )
        pending.extend(current.dependencies)
    return frozenset(query), header


def _is_sequence(field: Any) -> bool:
    annotation = field.field_info.annotation
    kinds = typing.get_args(annotation) if typing.get_origin(annotation) else (annotation,)
    return any(typing.get_origin(k) in (list, tuple, set, frozenset) for k in (annotation, *kinds))
