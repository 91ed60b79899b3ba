"""The supervisor's writes to a disk that may be full or failing: its own log, exit files,
and probes. Each raises nothing it should not (its log) or exactly OSError (the rest), so the
supervisor can keep going and say what failed, and never dies of a full disk.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from pathlib import Path

from runyard import failpoints

PROBE_BYTES = 4096  # a probe write needs a real block: an empty file fits on a full disk


def say(text: str) -> None:
    """Write a line to the supervisor's own log (its stderr), which may be on a full or failing
    disk: the supervisor must never die of its own logging, so any OSError is swallowed. Raw
    os.write, because a buffered stream that failed once keeps failing at every later flush."""
    try:
        failpoints.check("supervisor_log")
        os.write(2, text.encode(errors="replace") + b"\n")
    except OSError:
        pass


# what a write meets when a program put something under the names it writes (a directory, a
# link: the run's directory is open to a program that runs as the supervisor's user)
_PLANTED = frozenset({errno.EISDIR, errno.ELOOP, errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR})


def write_exit_file(path: str | Path, data: bytes, *, fsync: bool) -> None:
    """Atomically (temp file, optional fsync, rename); OSError if the disk refuses it, with no
    partial temp file left behind to hold space that is short. A directory or a link found
    under the file's or its temp file's name is renamed aside (`….stale-<ns>`) and the write
    made again: a program cannot keep its attempt's end from being recorded."""
    try:
        _write_atomically(str(path), data, fsync)
    except OSError as exc:
        if exc.errno not in _PLANTED:
            raise
        _set_aside_planted(str(path))  # a link under the temp name is unlinked already
        _write_atomically(str(path), data, fsync)


def _write_atomically(path: str, data: bytes, fsync: bool) -> None:
    head, name = os.path.split(path)
    tmp = f"{name}.tmp"
    # never through a link a program left: its run's directory put elsewhere (a link in its
    # place led the exit file out of the data directory), or a file in it (ELOOP either way:
    # set aside). The names are then looked up in the directory opened here, and only there.
    directory = os.open(head or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        failpoints.check("exit_file")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o644, dir_fd=directory)
        try:
            os.write(fd, data)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=directory, dst_dir_fd=directory)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=directory)
        raise
    finally:
        os.close(directory)


def _set_aside_planted(path: str) -> None:
    """Rename what is not a regular file under `path` or its temp name, and what is not a
    directory in the place of its directory (which is then made anew)."""
    head = os.path.dirname(path)  # noqa: PTH120
    with contextlib.suppress(OSError):
        if not stat.S_ISDIR(os.lstat(head).st_mode):
            os.rename(head, f"{head}.stale-{time.time_ns()}")  # noqa: PTH104
            os.mkdir(head)  # noqa: PTH102
    for name in (f"{path}.tmp", path):
        with contextlib.suppress(OSError):
            if not stat.S_ISREG(os.lstat(name).st_mode):
                os.rename(name, f"{name}.stale-{time.time_ns()}")  # noqa: PTH104


def probe(directory: Path, point: str) -> bool:
    """Would a write at `point` succeed now? A real block written in `directory`."""
    path = directory / f".probe-{point}"
    try:
        failpoints.check(point)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"\0" * PROBE_BYTES)
        finally:
            os.close(fd)
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
    return True
