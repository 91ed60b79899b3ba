"""A run's files reached from DATA/runs one directory at a time, never through a link.

`O_NOFOLLOW` on a whole path covers its last component only: a program that replaced its run's
directory (or its workspace) with a link to another directory had its server read logs, list
artifacts and serve files from there (a probe). Under an anchor (mounts.py: DATA/runs,
recorded at start) every directory on the way is opened with `O_NOFOLLOW` through its
parent's descriptor. Elsewhere (a path under no anchor: job files, uploads) a path is opened
as it was.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from runyard.mounts import anchor_of

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _parent(path: str) -> tuple[int, str] | None:
    """The directory holding `path` open (the caller closes it) and the name in it, reached
    from its anchor without following a link; None for a path under no anchor, or the
    anchor itself (an operator's link to DATA/runs is theirs, and is followed)."""
    anchored = anchor_of(path)
    if anchored is None:
        return None
    top = anchored[0]
    rest = path[len(top) :].strip("/")
    if not rest:
        return None
    *directories, name = rest.split("/")
    if any(part in ("", ".", "..") for part in (*directories, name)):
        raise OSError(errno.EINVAL, "not a plain path under the runs' directory", path)
    fd = os.open(top, DIR_FLAGS & ~os.O_NOFOLLOW)
    try:
        for part in directories:
            step = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = step
    except BaseException:
        os.close(fd)
        raise
    return fd, name


def open_beneath(path: Path | str, flags: int) -> int:
    """`path` opened with `flags` and `O_NOFOLLOW`; under an anchor, each directory on the
    way too."""
    text = os.fspath(path)
    found = _parent(text)
    if found is None:
        return os.open(text, flags | os.O_NOFOLLOW)
    directory, name = found
    try:
        return os.open(name, flags | os.O_NOFOLLOW, dir_fd=directory)
    finally:
        os.close(directory)
