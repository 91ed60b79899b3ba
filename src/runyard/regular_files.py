"""A run's own files (its log, progress and exit files, beside the workspace its program may
change at will) opened as the regular files the supervisor made there, or not at all: never
through a symbolic link (it could lead anywhere the server can read), never a FIFO (opening
one blocks the opening thread until a writer comes: the thread pool, then start-up, wedged),
never a directory or a device."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


class NotRegularFileError(OSError):
    """The path holds something other than a regular file."""


def open_regular(path: Path | str) -> tuple[int, int]:
    """A descriptor open for reading, and the file's size then; FileNotFoundError if nothing
    is there, another OSError (ELOOP for a link, NotRegularFileError) if what is there is not
    the file."""
    fd = os.open(path, READ_FLAGS)
    try:
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotRegularFileError(errno.EINVAL, "not a regular file", str(path))
    return fd, st.st_size
