"""Conditional requests on a download (RFC 9110 13): If-Match, If-Unmodified-Since,
If-None-Match and If-Modified-Since, evaluated in that order (13.2.2) against the file's
ETag and Last-Modified as they are now, before Range and If-Range.

A download says which version it is (ETag, Last-Modified) and took the conditions on it
unread: a cache or a download tool revalidating what it holds with If-None-Match got the whole
file again, never a 304, and one updating only the version it read (If-Match) was served
another. A condition that holds lets the request go on; one that fails is a 304 for a GET or
HEAD that asked whether the file changed, else a 412 naming the header.
"""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime

from starlette.responses import Response

from runyard.api.problems import problem

# an entity tag (RFC 9110 8.8.3): opaque text in quotes, weak with W/; a comma may be in it,
# so a list is read tag by tag, not split at commas
_TAG = re.compile(r'\s*(W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')
_EMPTY = re.compile(r"[ \t]*,")  # an empty element of a list, which a recipient skips
_YEAR = re.compile(r"\b([0-9]{4})\b")


def _tags(lines: list[str]) -> tuple[bool, list[tuple[bool, str]]] | None:
    """A list field's lines as (any: `*` given, [(weak, opaque tag)]); None if it holds
    something that is neither (a malformed condition: no tag of ours matches it)."""
    joined = ",".join(lines).strip()
    if joined == "*":
        return True, []
    found: list[tuple[bool, str]] = []
    at = 0
    while at < len(joined):
        if (empty := _EMPTY.match(joined, at)) is not None:  # `"a", , "b"`: RFC 9110 5.6.1
            at = empty.end()
            continue
        match = _TAG.match(joined, at)
        if match is None or match.end() == at:
            return None
        found.append((match.group(1) is not None, match.group(2)))
        at = match.end()
    return False, found


def _date(lines: list[str]) -> float | None:
    """One valid HTTP-date as UNIX seconds; None otherwise (the condition is ignored, as RFC
    9110 13.1.3 and 13.1.4 have it for an invalid date, and several lines make none)."""
    if len(lines) != 1:
        return None
    try:
        when = parsedate_to_datetime(lines[0])
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # the parser reads a year below 100 as this century's, "0000" too: no date written
    year = _YEAR.search(lines[0])
    if year is not None and int(year.group(1)) != when.year:
        return None
    return when.timestamp()


def _strong(etag: str) -> str | None:
    return None if etag.startswith("W/") else etag


def precondition_failed(
    headers: list[tuple[bytes, bytes]],
    method: str,
    etag: str,
    mtime: float,
    *,
    settled: bool = True,
) -> Response | None:
    """The answer a failed condition makes (304 or 412), or None: the request goes on.
    `settled`: the file was written a second ago or more. Until then the date of the second
    it was written in may name an earlier version written in that second too: the date does
    not show that the caller holds this one (a probe: a 304 for a file rewritten within it)."""
    lines: dict[bytes, list[str]] = {}
    for name, value in headers:
        if name in (b"if-match", b"if-none-match", b"if-modified-since", b"if-unmodified-since"):
            lines.setdefault(name, []).append(value.decode("latin-1"))
    if not lines:
        return None
    # the last whole second the file is known to have been this version in: its date's, once
    # that second is over; before, none (the second before its date, which it was not yet)
    modified = int(mtime) if settled else int(mtime) + 1
    return _kept_version(lines, etag, modified) or _same_version(lines, method, etag, modified)


def _kept_version(lines: dict[bytes, list[str]], etag: str, modified: int) -> Response | None:
    """If-Match, else If-Unmodified-Since: a 412 unless the file is still that version."""
    if b"if-match" in lines:
        parsed = _tags(lines[b"if-match"])
        held = parsed is not None and (
            parsed[0] or any(not weak and tag == _strong(etag) for weak, tag in parsed[1])
        )
        if not held:
            return _refused("If-Match", "the file is not the version named (its ETag differs)")
    elif (since := _date(lines.get(b"if-unmodified-since", []))) is not None and modified > since:
        return _refused("If-Unmodified-Since", "the file changed since that date")
    return None


def _same_version(
    lines: dict[bytes, list[str]], method: str, etag: str, modified: int
) -> Response | None:
    """If-None-Match, else If-Modified-Since: a 304 (a 412 but for GET and HEAD) when the
    caller holds the file as it is (Last-Modified has whole seconds)."""
    reads = method in ("GET", "HEAD")
    if b"if-none-match" in lines:
        parsed = _tags(lines[b"if-none-match"])
        opaque = etag.removeprefix("W/")
        if parsed is not None and (parsed[0] or any(t == opaque for _, t in parsed[1])):
            return (
                _unchanged(etag) if reads else _refused("If-None-Match", "the file is that version")
            )
    elif reads:
        since = _date(lines.get(b"if-modified-since", []))
        if since is not None and modified <= since:
            return _unchanged(etag)
    return None


def _unchanged(etag: str) -> Response:
    return Response(status_code=304, headers={"ETag": etag})


def _refused(header: str, why: str) -> Response:
    return problem(
        412, "Precondition failed", f"{header}: {why}", "precondition-failed",
        field=f"header.{header}", errors=[{"field": f"header.{header}", "message": why}],
    )  # fmt: skip
