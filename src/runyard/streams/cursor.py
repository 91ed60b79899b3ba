"""Following a file a program writes, when the program may also cut it back or rewrite it.

A progress file is meant to be appended to, but many programs write
`echo '{"fraction": 0.5}' > "$RUNYARD_PROGRESS_FILE"`: each line replaces the file.
Followed by its size alone, such a file is never read again once a line as long as the first
has been seen (the run's progress freezes), or is read from the middle of a line. A log can be
cut back too (a program truncating its own stdout). So a read also takes the last bytes before
the point it resumes from: if they are no longer what was read there, or the file is now
shorter than that point, the file was truncated or rewritten, and it is read again from its
start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from runyard.regular_files import open_regular

TAIL = 64  # bytes kept of what was read last: enough that a rewrite is told from the file


@dataclass(slots=True)
class FileCursor:
    """How far a file was read, and its last bytes before that point (fewer only when the
    reading resumed from an offset known without them: after a restart)."""

    offset: int = 0
    tail: bytes = b""

    def advance(self, data: bytes) -> None:
        self.offset += len(data)
        self.tail = (self.tail + data[-TAIL:])[-TAIL:]

    def restart(self) -> None:
        self.offset, self.tail = 0, b""


@dataclass(frozen=True, slots=True)
class Read:
    data: bytes
    restarted: bool  # the file was cut back or rewritten: `data` is from its start
    jumped_to: int | None = None  # `data` is from here: what was before it was passed over


def read_on(path: Path, cursor: FileCursor, limit: int) -> Read:
    """Up to `limit` bytes after `cursor` (it is not moved: the caller does, with what it
    keeps), from the start again if the file is no longer what the cursor saw. Nothing when
    the file is not there or is not a regular file."""
    try:
        fd, size = open_regular(path)
    except OSError:  # not there (yet), or its program made something else of it
        return Read(b"", False)
    try:
        return _read(fd, size, cursor, limit)
    finally:
        os.close(fd)


def read_latest(path: Path, cursor: FileCursor, limit: int, behind_max: int) -> Read:
    """`read_on`, for a file of which only the latest lines count (progress): more than
    `behind_max` bytes unread, and the last `limit` of them are read instead, the rest passed
    over. A program writing faster than anyone reads, or a sparse file of terabytes, costs
    one read, not one per `limit` bytes of it."""
    try:
        fd, size = open_regular(path)
    except OSError:
        return Read(b"", False)
    try:
        start = 0 if size < cursor.offset else cursor.offset
        if size - start <= behind_max:
            return _read(fd, size, cursor, limit)
        jump = size - limit
        return Read(os.pread(fd, limit, jump), start == 0 and cursor.offset > 0, jump)
    finally:
        os.close(fd)


def _read(fd: int, size: int, cursor: FileCursor, limit: int) -> Read:
    if size < cursor.offset:
        return Read(os.pread(fd, limit, 0), True)
    back = len(cursor.tail)
    if size == cursor.offset and not back:
        return Read(b"", False)
    data = os.pread(fd, limit + back, cursor.offset - back)
    if data[:back] != cursor.tail:
        return Read(os.pread(fd, limit, 0), True)
    return Read(data[back:], False)
