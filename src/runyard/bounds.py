"""Input bounds in one place: which characters, names, ids and JSON shapes runyard accepts.

Everything a client sends that can reach the store, an argv element, a path or a header is
checked against these rules before any work; the API publishes the same rules (as patterns
and limits) in its OpenAPI document and in each job's params schema.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# Names and ids: visible ASCII only, so they are safe in a URL, a path, a header and a log.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
JOB_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
PARAM_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
LABEL_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"

# One line of text (a label value, a json key): no control character at all (C0, DEL, C1).
LINE_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
# Free text (a str param, a string inside a json param): tab, LF and CR are what multi-line
# text legitimately holds; every other C0 control, DEL and C1 is refused. NUL never reaches
# an argv element (where the kernel cannot take it) nor the store (PostgreSQL refuses it).
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"

# Five cron fields (minute hour day month weekday) or a macro, in the characters standard
# cron has (scheduling/cron.py checks each field): croniter also takes a sixth field of
# seconds and a seventh of years, and its own `?`, `#`, `L` and `W`.
CRON_PATTERN = (
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)"
    r"|[0-9A-Za-z*,/-]+( [0-9A-Za-z*,/-]+){4})$"
)

# A json param: nesting depth and keys per object, unless its job file says otherwise (within
# the server's ceilings, settings `json_depth_ceiling` and `json_keys_ceiling`).
JSON_DEFAULT_DEPTH = 5
JSON_DEFAULT_KEYS = 200


# What text_problem looks for, as one compiled search: a 1 MB string takes about 4 ms, where
# a Python loop over its characters took a hundred, on the event loop.
_REFUSED_LINE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_REFUSED_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def text_problem(value: str, *, multiline: bool) -> str | None:
    """Why `value` is not acceptable text, or None. `multiline` allows tab, LF and CR."""
    found = (_REFUSED_TEXT if multiline else _REFUSED_LINE).search(value)
    if found is None:
        return None
    code, index = ord(found.group()), found.start()
    if 0xD800 <= code <= 0xDFFF:
        return f"lone surrogate U+{code:04X} at position {index} is not valid Unicode"
    return f"control character U+{code:04X} at position {index} is not accepted"


def _scalar_problem(value: Any) -> str | None:
    if isinstance(value, str):
        return text_problem(value, multiline=True)
    if isinstance(value, float) and not math.isfinite(value):
        return "only finite numbers are accepted (no NaN or Infinity)"
    if value is None or isinstance(value, bool | int | float):
        return None
    return f"{type(value).__name__} is not a JSON value"


def json_problem(value: Any, max_depth: int, max_keys: int) -> tuple[str, str] | None:
    """(where, why) the first part of a JSON value breaks the bounds, or None.

    Depth counts containers: `1` is 0 deep, `{"a": 1}` 1 deep, `{"a": [1]}` 2 deep. Walked
    without recursion, so no value can exhaust the stack."""
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, dict | list):
            if depth + 1 > max_depth:
                return where or "(value)", f"nested deeper than max_depth ({max_depth})"
            if isinstance(item, dict):
                if len(item) > max_keys:
                    why = f"has {len(item)} keys, over max_keys ({max_keys})"
                    return where or "(value)", why
                for key, child in item.items():
                    if not isinstance(key, str):
                        return where or "(value)", "object keys must be strings"
                    # where it is, to name in a refusal: keys cut short, so it stays readable
                    at = f"{where}[{key[:40]!r}{'…' if len(key) > 40 else ''}]"
                    bad = text_problem(key, multiline=False)
                    if bad is not None:
                        return at, f"key: {bad}"
                    stack.append((child, depth + 1, at))
            else:
                stack.extend((child, depth + 1, f"{where}[{i}]") for i, child in enumerate(item))
            continue
        bad = _scalar_problem(item)
        if bad is not None:
            return where or "(value)", bad
    return None


# Deeper than anything runyard accepts, shallower than any serialiser's own limit.
SHOW_MAX_DEPTH = 64


def _depth_over(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth + 1 > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def _plain_scalar(value: Any) -> bool:
    kind = type(value)
    if kind is str:
        return bool(value.isascii())  # ASCII holds no surrogate: it always encodes
    if kind is bool or value is None:
        return True
    if kind is int:
        return bool(-(2**63) <= value < 2**64)  # far from the interpreter's digit limit
    return kind is float and math.isfinite(value)


def _plainly_showable(value: Any, levels: int) -> bool:
    """True when `value` is JSON at a glance: scalars (ASCII text, finite numbers), in dicts
    with ASCII text keys or lists, `levels` deep at most. False says nothing: look closer."""
    if type(value) is dict:
        if levels == 0:
            return False
        for key, child in value.items():
            if type(key) is not str or not key.isascii():
                return False
            if not _plainly_showable(child, levels - 1):
                return False
        return True
    if type(value) is list:
        return levels > 0 and all(_plainly_showable(child, levels - 1) for child in value)
    return _plain_scalar(value)


def unshowable(value: Any) -> str | None:
    """Why a stored value cannot be answered as JSON, or None: the last line of defence, so
    one bad row (written before a bound existed, or by a bug) can never fail a whole list.
    Asked of every run answered; most are plain (a few flat params and labels), told so
    without the walk and the serialisation that the rest take."""
    if _plainly_showable(value, 3):
        return None
    if _depth_over(value, SHOW_MAX_DEPTH):
        return f"nested deeper than {SHOW_MAX_DEPTH}"
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, TypeError, RecursionError) as exc:
        return str(exc)[:200]
    return None
