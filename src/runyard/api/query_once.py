"""A query parameter that takes one value, given twice, is refused (422 naming it).

Starlette keeps the last of them and says nothing: `?name=a.csv&name=b.csv` stored an upload
named `b.csv`, `?offset=1&offset=2` read from 2. A proxy, a cache or an audit log in front of
the server may read the first, and what the server did would not be what they saw asked. A
parameter declared as a list (`state=queued&state=running`) takes them all, as declared.

Which parameters take one value is read from the OpenAPI document, the one description of
every route's parameters the server publishes and holds itself to (api/inputs.py).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import FastAPI
from starlette.requests import HTTPConnection

from runyard.errors import InvalidInputError

_Key = tuple[str, str]  # (method, path template)


async def one_value_each(conn: HTTPConnection) -> None:
    """A dependency of every route: past the router, so the route's declaration is known."""
    if not conn.scope.get("query_string") or conn.scope["type"] != "http":
        return
    counts = Counter(name for name, _ in conn.query_params.multi_items())
    repeated = [name for name, n in counts.items() if n > 1]
    if not repeated:
        return
    # the template as the OpenAPI document keys it (`{path}`, not `{path:path}`)
    path = getattr(conn.scope.get("route"), "path_format", None)
    if path is None:
        return
    single = _single_valued(conn.app, (conn.scope["method"].lower(), path))
    for name in repeated:
        if name in single:
            raise InvalidInputError(
                f"query parameter {name!r} takes one value; it was given {counts[name]} times",
                field=f"query.{name}",
            )


def _single_valued(app: FastAPI, key: _Key) -> frozenset[str]:
    cache: dict[_Key, frozenset[str]] = app.state.__dict__.setdefault("_single_valued", {})
    found = cache.get(key)
    if found is None:
        op = app.openapi().get("paths", {}).get(key[1], {}).get(key[0], {})
        found = frozenset(
            p["name"] for p in op.get("parameters", [])
            if p.get("in") == "query" and not _is_list(p.get("schema", {}))
        )  # fmt: skip
        cache[key] = found
    return found


def _is_list(schema: dict[str, Any]) -> bool:
    return any(b.get("type") == "array" for b in schema.get("anyOf", [schema]))
