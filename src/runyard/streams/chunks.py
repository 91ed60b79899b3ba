"""Cutting log bytes into stream-safe chunks, and reading progress lines."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

MAX_CHUNK = 16 * 1024
MAX_PROGRESS_LINE = 64 * 1024
# A progress line is data from outside (the program writes it) that goes to the store and to
# every watcher: only what any JSON client and both stores can take back is kept.
MAX_PROGRESS_DEPTH = 32
_MAX_INT = 2**63  # PostgreSQL's bigint; JavaScript clients lose precision long before


def char_boundary(data: bytes, cut: int, start: int = 0) -> int:
    """Move `cut` back so it does not split a UTF-8 sequence (continuation bytes 10xxxxxx),
    not to `start` or before it (then `cut` itself: no character is that long)."""
    back = cut
    while back > cut - 4 and back > start and (data[back] & 0xC0) == 0x80:
        back -= 1
    return back if back > start else cut


def utf8_text_end(data: bytes) -> int | None:
    """Where `data` ends as UTF-8 text: its length when it is UTF-8 throughout; the start of
    a character cut short at its very end (the rest not written yet, or past the range asked
    for), when all before it is UTF-8; None when it is not UTF-8 text, or is only that cut
    character."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # the first fault: everything before it decodes
        cut_short = exc.reason == "unexpected end of data" and exc.end == len(data)
        return exc.start if cut_short and exc.start > 0 else None
    return len(data)


def split_chunks(data: bytes, max_size: int = MAX_CHUNK) -> Iterator[bytes]:
    """Pieces of at most `max_size`, cut after a newline where there is one, else on a UTF-8
    character boundary: a very long line is split, never a character. Lazily, each piece cut
    from `data` where it lies: cutting the rest off anew after each piece copied a 256 KiB
    read eight times over, and a replay of a long log to a watcher that stops reading held
    every piece of its read besides the read itself."""
    start, end = 0, len(data)
    while end - start > max_size:
        nl = data.rfind(b"\n", start, start + max_size)
        cut = nl + 1 if nl >= 0 else char_boundary(data, start + max_size, start)
        yield data[start:cut]
        start = cut
    if start < end:
        yield data[start:] if start else data


# What one read of a progress file yields at most: its last lines that are progress. Progress
# is a latest state, each line superseding the one before; a program writing thousands of lines
# a second (a flood, a loop's every turn) would otherwise cost a parse and a stored event each.
PROGRESS_KEEP = 256
# Lines looked at per read for those it keeps: bounds the parsing of a read of nothing but
# malformed lines.
_PROGRESS_EXAMINE = 4 * PROGRESS_KEEP


@dataclass
class ProgressParser:
    """Complete JSON-object lines become progress; anything else is skipped and counted.
    `consumed` is how far the file has been read into whole lines (a resume point). Of each
    read's lines only the last `PROGRESS_KEEP` that are progress are kept, looked for from
    the end; the lines before them are passed over unparsed and counted in `coalesced`."""

    consumed: int = 0
    skipped: int = 0
    coalesced: int = 0
    _partial: bytearray = field(default_factory=bytearray)
    _discarded: int | None = None  # inside an oversized line: how much of it was dropped
    _jumped: bool = False  # that line is where a reader landed, passing over lines (`jump`)
    _landed: int = 0  # the part of `_discarded` before where the reader landed

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._partial += data
        last = self._partial.rfind(b"\n")
        whole = b""
        if last >= 0:
            whole = bytes(self._partial[: last + 1])
            del self._partial[: last + 1]
        if whole and self._discarded is not None:
            # the end of an oversized line: passed and counted only now, as a whole, so that
            # `consumed` (a resume point, stored with the count) is never inside it
            nl = whole.find(b"\n")
            self.consumed += self._discarded + nl + 1
            self._count_cut(self._discarded + nl)
            whole = whole[nl + 1 :]
        self.consumed += len(whole)
        found = self._last_progress(whole.split(b"\n")[:-1]) if whole else []
        if len(self._partial) > MAX_PROGRESS_LINE:
            # an endless line: what we have is dropped as it comes, up to its end
            self._discarded = (self._discarded or 0) + len(self._partial)
            self._partial.clear()
        return found

    def close(self) -> list[dict[str, Any]]:
        """The program has ended: a last line it left without its newline is a line all the
        same (it will write no more), taken or skipped as any other."""
        line, self._partial = bytes(self._partial), bytearray()
        self.consumed += len(line) + (self._discarded or 0)  # to the file's end, no further
        if self._discarded is not None:  # an endless line, cut off by the end
            self._count_cut(self._discarded + len(line))
            return []
        return self._last_progress([line]) if line else []

    def jump(self, to: int) -> None:
        """The reader passed over what the file held between `consumed` and `to`, and reads
        on from there: the line it lands in is dropped up to its end, as an oversized one is
        (and counted as coalesced: passed over, not malformed)."""
        self._partial.clear()
        self._discarded = self._landed = to - self.consumed
        self._jumped = True

    def _count_cut(self, length: int) -> None:
        """A line dropped up to its end (`length` bytes of it seen): skipped, as oversized;
        or, the one a jump landed in, passed over — unless what followed the landing alone
        was over the limit: then it was an oversized line whatever came before (one such
        line, megabytes long, was counted nowhere, and the run showed no sign of it)."""
        if self._jumped and length - self._landed <= MAX_PROGRESS_LINE:
            self.coalesced += 1
        else:
            self.skipped += 1
        self._discarded, self._jumped = None, False

    def restart(self) -> None:
        """The file is read again from its start (it was cut back or rewritten): what was
        half read of it is gone; the counts go on."""
        self.consumed = 0
        self._partial.clear()
        self._discarded = None
        self._jumped = False

    def _last_progress(self, lines: list[bytes]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        at, examined = len(lines), 0
        while at > 0 and len(found) < PROGRESS_KEEP and examined < _PROGRESS_EXAMINE:
            at -= 1
            line = lines[at]
            if not line.strip():
                continue
            examined += 1
            value = self._parse(line)
            if value is None:
                self.skipped += 1
            else:
                found.append(value)
        self.coalesced += at  # passed over (blank ones among them)
        found.reverse()
        return found

    @staticmethod
    def _parse(line: bytes) -> dict[str, Any] | None:
        if len(line) > MAX_PROGRESS_LINE:
            return None
        try:
            # decoded as UTF-8 first: given bytes, json guesses their encoding, and took
            # UTF-16 and UTF-32 lines (a probe), where a line that is no UTF-8 is skipped; a
            # byte-order mark before it (.NET and PowerShell write one) is no part of it
            value = json.loads(
                line.decode("utf-8-sig"),
                parse_constant=_not_json, parse_float=_finite, parse_int=_bounded,
            )  # fmt: skip
        except (ValueError, RecursionError):
            return None
        if not isinstance(value, dict) or not _storable(value):
            return None
        value.pop("attempt", None)  # runyard's to say: every event names its attempt's number
        return value


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: Python's json takes them


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999
        raise ValueError("number out of range")
    return value


def _bounded(text: str) -> int:
    value = int(text)
    if not -_MAX_INT < value < _MAX_INT:
        raise ValueError("integer out of range")
    return value


def _storable(value: dict[str, Any]) -> bool:
    """Not nested deeper than MAX_PROGRESS_DEPTH; no NUL (PostgreSQL refuses it) and no lone
    surrogate (not UTF-8) in any string or key. Walked without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not _text_ok(item):
                return False
        elif isinstance(item, dict | list):
            if depth > MAX_PROGRESS_DEPTH:
                return False
            if isinstance(item, dict):
                if not all(_text_ok(key) for key in item):
                    return False
                item = item.values()
            stack.extend((child, depth + 1) for child in item)
    return True


def _text_ok(text: str) -> bool:
    if "\0" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
