"""A run's own files (its log, progress and exit files, beside the workspace its program may
change at will) opened as the regular files the supervisor made there, or not at all: never
through a symbolic link (it could lead anywhere the server can read), never a FIFO (opening
one blocks the opening thread until a writer comes: the thread pool, then start-up, wedged),
never a directory or a device, never a file mounted over the run's (a program running as root
can bind-mount any file of the host there: mounts.py), and never by way of a linked directory
(beneath.py). A second hard link is no reason to refuse one: an operator's `cp -al` snapshot
of the data directory makes one of every file, and the run's directory is not its program's
to write under `run_as` (an artifact's, in the workspace, is refused: services/artifacts.py).
Job files are read the same way, except that a link is followed (deploy tools and Kubernetes
ConfigMaps link them into place, or mount them), and never past a cap."""

from __future__ import annotations

import errno
import functools
import json
import os
import stat
from pathlib import Path
from typing import Any

from runyard.beneath import open_beneath
from runyard.mounts import anchor_of, differs, mount_id, place_of, warn_once

READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


class NotRegularFileError(OSError):
    """The path holds something other than a regular file."""


def open_regular(path: Path | str, *, follow_links: bool = False) -> tuple[int, int]:
    """A descriptor open for reading, and the file's size then; FileNotFoundError if nothing
    is there, another OSError (ELOOP for a link, NotRegularFileError) if what is there is not
    the file. `follow_links`: a link to a regular file will do (a job file's)."""
    if follow_links:
        fd = os.open(path, READ_FLAGS & ~os.O_NOFOLLOW)
    else:  # a run's file: no link followed on the way to it either
        fd = open_beneath(path, READ_FLAGS)
    try:
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        why = f"not a regular file ({kind_of(st.st_mode)})"
        raise NotRegularFileError(errno.EINVAL, why, str(path))
    if not follow_links:
        try:
            mounted = _mounted_over(fd, st, path)
        except BaseException:
            os.close(fd)
            raise
        if mounted:
            os.close(fd)
            why = "a mount point: another file system's file, not the run's"
            raise NotRegularFileError(errno.EXDEV, why, str(path))
    return fd, st.st_size


def _mounted_over(fd: int, st: os.stat_result, path: Path | str) -> bool:
    """Whether the file open as `fd` is on another mount than it should be: a run's file
    (under the runs' directory) on another than the one DATA/runs was on at start (a mount
    over the file, the run's directory or DATA/runs itself: warned of once); another file
    on another than its directory was when first seen. One statx of `fd` either way (a
    tailer opens its log at each read)."""
    anchored = anchor_of(path)
    if anchored is not None:
        if anchored[1].holds(st, mount_id(fd)):
            return False
        warn_once("run_file_on_another_mount", path)
        return True
    dev, mnt = _place_of_dir(os.path.dirname(path) or ".")  # noqa: PTH120
    return differs(st, mount_id(fd), dev, mnt)


_place_of_dir = functools.lru_cache(maxsize=4096)(place_of)  # a run's directory stays put


def read_regular(path: Path | str, limit: int, *, follow_links: bool = False) -> bytes:
    """At most `limit` bytes of the regular file at `path` (open_regular's errors): a file
    that grows, is sparse or claims any size costs no more than that."""
    fd, _ = open_regular(path, follow_links=follow_links)
    chunks: list[bytes] = []
    left = limit
    try:
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 16))):
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_json_object(path: Path | str, limit: int) -> dict[str, Any]:
    """The JSON object in the regular file at `path`, of at most `limit` bytes: OSError if it
    cannot be read so (a FIFO, a link, a directory: never waited on), ValueError if it holds
    anything else (not JSON, nested past the reader, not an object, cut at `limit`)."""
    data = read_regular(path, limit + 1)
    if len(data) > limit:
        raise ValueError(f"over {limit} bytes")
    try:
        value = json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if type(value) is not dict:
        raise ValueError("not a JSON object")
    return value


def kind_of(mode: int) -> str:
    """What a file that is not a regular one is, to say so in an error."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"
