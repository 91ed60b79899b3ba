"""The JSON log's one processor writes what structlog's chain of five wrote (cli/log_render.py)."""

from __future__ import annotations

import os
import re
import sys
from datetime import UTC, datetime

import orjson
from structlog.contextvars import bound_contextvars

from runyard.cli.log_render import CHAIN, render_json, stamp


def _by_chain(method: str, event: dict[str, object]) -> dict[str, object]:
    for processor in CHAIN:
        event = processor(None, method, event)  # type: ignore[assignment]
    return event


def test_a_line_holds_the_same_keys_in_the_same_order_as_the_chain_wrote() -> None:
    with bound_contextvars(request_id="r1", principal="anonymous"):
        event = {"event": "run_transition", "run_id": "01X", "to": "running", "reason": None}
        ours = orjson.loads(render_json(None, "warning", dict(event)))
        theirs = _by_chain("warning", dict(event))
    assert list(ours) == list(theirs)
    ours_at, theirs_at = ours.pop("timestamp"), theirs.pop("timestamp")
    assert ours == theirs
    assert ours["level"] == "warning" and ours["request_id"] == "r1"
    gap = datetime.fromisoformat(ours_at) - datetime.fromisoformat(str(theirs_at))
    assert abs(gap.total_seconds()) < 5


def test_the_time_stamp_is_utc_with_microseconds_and_follows_the_clock() -> None:
    before = datetime.now(UTC)
    got = stamp()
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", got)
    at = datetime.fromisoformat(got)
    assert before.replace(microsecond=0) <= at <= after


def _fail() -> None:
    raise ValueError("boom")


def test_a_traceback_and_what_json_cannot_hold_are_still_written() -> None:
    try:
        _fail()
    except ValueError:
        line = render_json(None, "error", {"event": "failed", "exc_info": sys.exc_info()})
    got = orjson.loads(line)
    assert "ValueError: boom" in got["exception"] and "exc_info" not in got
    odd = orjson.loads(render_json(None, "info", {"event": "x", "what": object(), "n": 2**70}))
    assert odd["n"] == 2**70 and odd["what"].startswith("<object object")
    shown = orjson.loads(render_json(None, "info", {"event": "x", "what": _Told()}))
    assert shown["what"] == {"as": "told"}


def test_a_name_of_undecodable_bytes_is_logged_as_json_a_strict_reader_takes() -> None:
    """A re-probe: a mount point named by invalid UTF-8 was logged through json's fallback,
    with lone surrogates ("\\udcff") and another spacing than every other line."""
    name = os.fsdecode(b"outputs/\xff\xfe")
    line = render_json(None, "warning", {"event": "detached", "paths": [name], "n": 1})
    got = orjson.loads(line)  # orjson refuses a lone surrogate
    assert got["paths"] == ["outputs/\\xff\\xfe"] and b", " not in line


class _Told:
    """An object that says how structlog should log it."""

    def __structlog__(self) -> dict[str, str]:
        return {"as": "told"}
