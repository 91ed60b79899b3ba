"""The JSON log's one structlog processor: the context, the level, the time and a traceback
added, then the line rendered — what five processors did one after the other.

A run writes three lines (its request, two transitions). Through the chain each cost about
12.6 µs of the event loop's time, most of it not the rendering but the calls between the
processors and the time stamp (a timezone-aware datetime and its isoformat per line); now
about 10. The line is the same, key for key and in the same order; only the time stamp is
built from the second it falls in, formatted once per second, and always carries its six
digits of microseconds (isoformat left them out at a whole second).
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

import orjson
from structlog.contextvars import merge_contextvars
from structlog.processors import JSONRenderer, TimeStamper, add_log_level, format_exc_info
from structlog.typing import EventDict, Processor, WrappedLogger

# What a line goes through before its renderer: as it stands for the console's lines, and
# what `render_json` does in one step for the JSON log's (the test holds the two together).
CHAIN: list[Processor] = [
    merge_contextvars, add_log_level, TimeStamper(fmt="iso", utc=True), format_exc_info,
]  # fmt: skip


class _Stamper:
    """ISO 8601 UTC with microseconds ("2026-12-03T07:11:02.603076Z"), as structlog's
    TimeStamper(fmt="iso", utc=True) writes it, the date and time of day reused within a
    second. Read and replaced as one tuple: safe from any thread."""

    def __init__(self) -> None:
        self._second: tuple[int, str] = (-1, "")

    def __call__(self) -> str:
        now = time.time()
        whole = int(now)
        second, prefix = self._second
        if whole != second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
            self._second = (whole, prefix)
        return f"{prefix}.{int((now - whole) * 1_000_000):06d}Z"


stamp = _Stamper()


def log_json(event: Any, **kw: Any) -> bytes:
    """A log line: orjson, what it cannot write handed to structlog's fallback (an object's
    `__structlog__`, else its repr); a text that is no UTF-8 (a file name of undecodable
    bytes, held as lone surrogates) with those bytes written as `\\xff`; json for what orjson
    still refuses (an integer past 64 bits), as compact: a log call must never fail, and
    its line is JSON a strict reader takes, in the same form as the others."""
    default = kw.get("default")
    try:
        return orjson.dumps(event, default=default, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        event = _utf8(event)
    try:
        return orjson.dumps(event, default=default, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(event, default=repr, separators=(",", ":")).encode()


def _utf8(value: Any) -> Any:
    """`value` with every text made UTF-8: an undecodable byte kept as a backslash escape."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return value
    if isinstance(value, dict):
        return {_utf8(k): _utf8(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_utf8(v) for v in value]
    return value


_render = JSONRenderer(serializer=log_json)  # passes its fallback as `default`


def render_json(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> bytes:
    event_dict = merge_contextvars(logger, method_name, event_dict)
    event_dict = add_log_level(logger, method_name, event_dict)
    event_dict["timestamp"] = stamp()
    if "exc_info" in event_dict:
        event_dict = format_exc_info(logger, method_name, event_dict)
    return cast(bytes, _render(logger, method_name, event_dict))
