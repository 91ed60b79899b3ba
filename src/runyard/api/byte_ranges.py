"""A `Range: bytes=` header read as RFC 9110 (14.1.2) writes it and no looser: each position
plain ASCII digits. Starlette read them with int(), which takes `1_0`, `+1`, ` 1` and
Arabic-Indic digits, and dropped a part it could not read where it should refuse it."""

from __future__ import annotations

from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from runyard.api.inputs import header_int

MAX_RANGES = 100  # more than this is served whole, as Starlette does: never a refusal
_OWS = " \t"  # the only whitespace a list element may have around it (RFC 9110 5.6.1)


def parse_byte_ranges(header: str, size: int) -> list[tuple[int, int]]:
    """The [start, end) spans a `bytes=` Range asks of a file of `size` bytes: one as asked,
    several sorted with overlaps merged, none ([]: the whole file) past MAX_RANGES. A part
    that starts at or past the end is dropped: a set is satisfiable if one of its parts is
    (RFC 9110 14.1.1), and Starlette refused the whole set for one. Raises
    MalformedRangeHeader (400) or RangeNotSatisfiable (416, no part starts before the end)."""
    unit, equals, spec = header.partition("=")
    if not equals or unit.strip(_OWS).lower() != "bytes":
        raise MalformedRangeHeader("not a bytes=FIRST-LAST list")
    # empty elements (`0-1,,5-`) are allowed by the list syntax, and skipped
    parts = [p.strip(_OWS) for p in spec.split(",") if p.strip(_OWS)]
    if not parts:
        raise MalformedRangeHeader("no range is asked for")
    asked = [_span(part, size) for part in parts]  # every part read: one malformed is a 400
    if len(asked) > MAX_RANGES:
        return []
    ranges = [(start, end) for start, end in asked if start < size]
    if not ranges:
        raise RangeNotSatisfiable(size)
    if len(ranges) == 1:
        return ranges
    ranges.sort()
    merged = [ranges[0]]
    for start, end in ranges[1:]:
        last_start, last_end = merged[-1]
        if start <= last_end:
            merged[-1] = (last_start, max(last_end, end))
        else:
            merged.append((start, end))
    return merged


def _span(part: str, size: int) -> tuple[int, int]:
    """FIRST-LAST, FIRST- or -SUFFIX as [start, end), end clamped to `size`. Every number goes
    through header_int, the one strict reading of a header's integer (digits only, any
    length read in bounded time: past 2**63 - 1 it is past every file's end)."""
    first_text, dash, last_text = part.partition("-")
    first = header_int(first_text) if first_text else None
    last = header_int(last_text) if last_text else None
    if not dash or (first_text and first is None) or (last_text and last is None):
        raise MalformedRangeHeader(f"{_shown(part)} is not FIRST-LAST, FIRST- or -SUFFIX")
    if first is None:  # the last `last` bytes (-0 asks for none: unsatisfiable)
        if last is None:
            raise MalformedRangeHeader("a range of neither FIRST nor SUFFIX")
        return size - min(last, size), size
    if last is not None and last < first:
        raise MalformedRangeHeader(f"{_shown(part)} ends before it begins")
    return first, size if last is None else min(last + 1, size)


def _shown(part: str) -> str:
    """The client's text, short and in ASCII, for the problem's detail."""
    return ascii(part[:40] + ("..." if len(part) > 40 else ""))
