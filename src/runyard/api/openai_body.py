"""The body of `POST /v1/chat/completions`, read as strictly as the rest of the API reads its
bodies. The chat body ignores the fields it has no use for (temperature, tools, ...), as
OpenAI's clients send many; Python's JSON reader, which FastAPI uses, takes NaN, Infinity and
lone surrogates (`"\\ud800"`), which are not JSON, and an ignored field was never checked
for them (a probe: `{"temperature": NaN}` answered 200, where `POST /v1/runs`, whose every
field is checked, refuses NaN). So the whole body is checked before the route reads it: its
media type, and every value in it, ignored or not, after what every JSON body is checked for
(api/json_body.py: UTF-8, no key twice, a syntax error or nesting too deep said as such)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from runyard.api.json_body import JSONBodyRoute, read_json
from runyard.errors import InvalidInputError, RunyardError

_SURROGATE = re.compile("[\ud800-\udfff]")
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class NotStrictJSONError(RunyardError):
    """Valid to Python's JSON reader, not JSON: named by where it is in the body."""

    status, title, slug = 400, "Invalid input", "invalid-input"


class NotJSONBodyError(RunyardError):
    """A body sent as something other than JSON."""

    status, title, slug = 400, "Unsupported content type", "unsupported-content-type"


class StrictJSONRoute(JSONBodyRoute):
    """The chat body: `application/json` (400 otherwise, as OpenAI answers), and strict JSON
    throughout, its ignored fields included."""

    refused = NotJSONBodyError
    names_header = False  # OpenAI's `param` names a field of the body, or nothing

    def parse(self, body: bytes) -> Any:
        try:
            value = read_json(body)
        except InvalidInputError as exc:  # a key given twice: malformed, as OpenAI answers it
            raise NotStrictJSONError(exc.detail, field=exc.extra.get("field", "body")) from None
        found = _not_json(value)
        if found is not None:
            where, why = found
            raise NotStrictJSONError(f"{where}: {why}", field=where)
        return value


def _not_json(value: Any) -> tuple[str, str] | None:
    """(where, why) of the first value in `value` that is not JSON, or None. Asked of the C
    encoder first, which refuses the same and is the whole cost on a good body; only a bad
    one is walked (without recursion), to say where."""
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode()
    except (ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        pass
    else:
        return None
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, dict):
            for key in item:
                if _SURROGATE.search(key):
                    return where or "body", f"the key {_shown(key)}: {_surrogate(key)}"
            stack.extend((item[k], _join(where, _shown(k))) for k in reversed(list(item)))
        elif isinstance(item, list):
            stack.extend((item[i], _join(where, str(i))) for i in reversed(range(len(item))))
        elif isinstance(item, float) and not math.isfinite(item):
            return where or "body", (
                "only finite numbers are JSON (no NaN, Infinity or number past a double's range)"
            )
        elif isinstance(item, str) and _SURROGATE.search(item):
            return where or "body", _surrogate(item)
    return None


def _join(where: str, part: str) -> str:
    return f"{where}.{part}" if where else part


def _shown(key: str) -> str:
    """A key as a field's name: as it is when plain, else quoted and escaped (a lone
    surrogate cannot be answered as UTF-8), cut short."""
    if _PLAIN_KEY.fullmatch(key):
        return key
    return repr(key[:40]) + ("…" if len(key) > 40 else "")


def _surrogate(text: str) -> str:
    found = _SURROGATE.search(text)
    assert found is not None  # noqa: S101  asked only of text that holds one
    return f"lone surrogate U+{ord(found.group()):04X} at position {found.start()} is not JSON"
