"""`unshowable`: its quick look at plain values says exactly what the full check says."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runyard.bounds import SHOW_MAX_DEPTH, unshowable


def _full_check(value: Any) -> bool:
    """Showable by the long way: within the depth, and serialised to UTF-8 JSON."""
    depth, stack = 0, [(value, 0)]
    while stack:
        item, d = stack.pop()
        if isinstance(item, dict | list):
            depth = max(depth, d + 1)
            stack.extend((c, d + 1) for c in (item.values() if isinstance(item, dict) else item))
    if depth > SHOW_MAX_DEPTH:
        return False
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, TypeError, RecursionError):
        return False
    return True


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


VALUES = [
    None, 1, True, 1.5, "text", {}, [],
    {"params": {}, "labels": {}, "progress": None, "reason": None, "idempotency_key": None},
    {"params": {"n": 3, "name": "abc", "f": 0.5}, "labels": {"team": "a"}, "reason": "x"},
    {"p": {"deep": {"deeper": {"deepest": 1}}}},  # past the quick look's levels: the long way
    {"p": float("nan")}, {"p": {"q": float("inf")}}, {"p": [1, 2, float("-inf")]},
    {"p": 2**70}, {"p": -(2**63)}, {"p": 2**64}, {"p": 10**5000},
    {"p": "caf\u00e9"}, {"p": "\ud800"}, {"caf\u00e9": 1}, {"\udfff": 1},
    {1: "int key"}, {"p": (1, 2)}, {"p": {1, 2}}, {"p": b"bytes"}, {"p": object()},
    _deep(SHOW_MAX_DEPTH), _deep(SHOW_MAX_DEPTH + 1),
]  # fmt: skip


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_the_quick_look_agrees_with_the_full_check(value: Any) -> None:
    assert (unshowable(value) is None) == _full_check(value)


def test_what_cannot_be_shown_says_why() -> None:
    assert "not JSON compliant" in str(unshowable({"params": {"x": float("nan")}}))
    assert "surrogates" in str(unshowable({"labels": {"k": "\ud800"}}))
    assert "Exceeds the limit" in str(unshowable({"params": {"n": 10**5000}}))
