"""A run's files reached from DATA/runs one directory at a time, never through a link.

`O_NOFOLLOW` on a whole path covers its last component only: a program that replaced its run's
directory (or its workspace) with a link to another directory had its server read logs, list
artifacts and serve files from there (a probe). Under an anchor (mounts.py: DATA/runs,
recorded at start) every directory on the way is opened with `O_NOFOLLOW` through its
parent's descriptor, and the name opened is looked at again through that descriptor once
open: what a program renamed, unlinked or hard-linked in between is seen for what it is.
Elsewhere (a path under no anchor: job files, uploads) a path is opened as it was.
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


def open_beneath(path: Path | str, flags: int) -> tuple[int, os.stat_result | None]:
    """`path` opened with `flags` and `O_NOFOLLOW`; under an anchor, each directory on the
    way too, and the stat of the name in its directory as the open left it (its `st_ino`
    is the file's only if nobody moved it meanwhile): None under no anchor."""
    text = os.fspath(path)
    found = _parent(text)
    if found is None:
        return os.open(text, flags | os.O_NOFOLLOW), None
    directory, name = found
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW, dir_fd=directory)
        try:
            named = os.stat(name, dir_fd=directory, follow_symlinks=False)
        except BaseException:
            os.close(fd)
            raise
        return fd, named
    finally:
        os.close(directory)


def only_name(st: os.stat_result, named: os.stat_result | None) -> bool:
    """Whether the file open (`st`, its fstat) is the run's own: its one link, the name it
    was opened by still its (`named`, None: nothing to compare). A hard link made by a
    program brings another file's contents under a run's name; dropping the link between the
    open and a look at the count (a probe, 300 tries: /etc/shadow served) leaves the count
    at one, but not the name."""
    if st.st_nlink != 1:
        return False
    if named is None:
        return True
    return (named.st_dev, named.st_ino) == (st.st_dev, st.st_ino) and named.st_nlink == 1
