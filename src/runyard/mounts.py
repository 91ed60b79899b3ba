"""Mount points in a run's files. A program running as root without a sandbox can leave one
in its workspace (a chroot or image builder killed by its timeout leaves bind mounts of /dev,
/proc or host directories); a walk that crossed it would list, serve or delete another file
system's files. Every walk of a run's tree stays on the mount its root is on.

A mount is told by its mount ID, read with statx (STATX_MNT_ID, Linux 5.8) through libc, since
Python's os.stat has none and a bind mount of the same file system keeps st_dev; on older
kernels from /proc/self/fdinfo (Linux 3.15); where neither can say, st_dev alone. The ID is
read from a descriptor or a name relative to one, never by a path the program could re-aim.

Every check is anchored to the mount of the runs' directory (DATA/runs) as the server found
it at start, before any program of its life ran (`record_anchor`): a run's directory, its
workspace, its files and the trash are used only if the descriptor opened for them is on that
mount, so a mount over the run's directory, over DATA/runs or over its trash (which moves
every check's other end with it) is refused too.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

_STATX_MNT_ID = 0x1000
_AT_FDCWD = -100
_AT_SYMLINK_NOFOLLOW = 0x100
_AT_NO_AUTOMOUNT = 0x800
_AT_EMPTY_PATH = 0x1000
_AT_STATX_DONT_SYNC = 0x4000  # the ID is the local kernel's: no network file system asked
_STATX_SIZE = 256  # struct statx, with its spare room
_DEV_OFFSET = 136  # stx_dev_major, stx_dev_minor, then stx_mnt_id
_MNT_ID_OFFSET = 144
_MNT_DETACH = 2
_UMOUNT_NOFOLLOW = 8

_libc = ctypes.CDLL(None, use_errno=True)
_statx = getattr(_libc, "statx", None)  # glibc 2.28


class _Kernel:
    statx_says = _statx is not None  # until the kernel shows it cannot: fdinfo from then on


class CrossesMountError(OSError):
    """A walk would have crossed into another mount: it does not."""

    def __init__(self, name: str) -> None:
        super().__init__(errno.EXDEV, "a mount point: another file system's files", name)


def mount_id(fd: int, name: str | None = None) -> int | None:
    """The ID of the mount that descriptor `fd` is on or, given `name`, that the entry of
    that name in directory `fd` is on (a link not followed; a mount point's is the mount's
    over it). None where the system cannot say. OSError if `name` is not there."""
    if _Kernel.statx_says and _statx is not None:
        buf = ctypes.create_string_buffer(_STATX_SIZE)
        flags = _AT_SYMLINK_NOFOLLOW | _AT_NO_AUTOMOUNT | _AT_STATX_DONT_SYNC
        path = os.fsencode(name) if name is not None else b""
        if name is None:
            flags |= _AT_EMPTY_PATH
        if _statx(fd, path, flags, _STATX_MNT_ID, buf) == 0:
            if struct.unpack_from("=I", buf, 0)[0] & _STATX_MNT_ID:
                return int(struct.unpack_from("=Q", buf, _MNT_ID_OFFSET)[0])
            _Kernel.statx_says = False  # a kernel before 5.8
        else:
            code = ctypes.get_errno()
            if code not in (errno.ENOSYS, errno.EPERM):  # EPERM: a seccomp filter's refusal
                raise OSError(code, os.strerror(code), name)
            _Kernel.statx_says = False
    if name is None:
        return _fdinfo_mount_id(fd)
    opened = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    try:
        return _fdinfo_mount_id(opened)
    finally:
        os.close(opened)


def place_of(path: str) -> tuple[int, int | None]:
    """(st_dev, mount ID) of the directory at `path`, links followed (the server's own paths):
    in one statx where the kernel has it."""
    if _Kernel.statx_says and _statx is not None:
        buf = ctypes.create_string_buffer(_STATX_SIZE)
        flags = _AT_NO_AUTOMOUNT | _AT_STATX_DONT_SYNC
        found = _statx(_AT_FDCWD, os.fsencode(path), flags, _STATX_MNT_ID, buf) == 0
        if found and struct.unpack_from("=I", buf, 0)[0] & _STATX_MNT_ID:
            major, minor, mnt = struct.unpack_from("=IIQ", buf, _DEV_OFFSET)
            return os.makedev(major, minor), int(mnt)
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        return os.fstat(fd).st_dev, mount_id(fd)
    finally:
        os.close(fd)


def _fdinfo_mount_id(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError), open(f"/proc/self/fdinfo/{fd}", "rb") as fh:  # noqa: PTH123
        for line in fh.read().splitlines():  # read to its end: a few lines, one page
            if line.startswith(b"mnt_id:"):
                return int(line.split()[1])
    return None


def differs(st: os.stat_result, mnt: int | None, dev: int, root_mnt: int | None) -> bool:
    """Whether an entry (its stat, its mount ID) is on another mount than the walk's root."""
    return st.st_dev != dev or (mnt is not None and root_mnt is not None and mnt != root_mnt)


def detach(dir_fd: int, name: str) -> OSError | None:
    """Detach the mount over the entry `name` of directory `dir_fd` (umount2 MNT_DETACH: the
    mounted files are untouched, the entry's own come back into view); None once done, else
    why not (EPERM when the server may not). Named through the directory's descriptor, so
    no path the program could change since it was walked."""
    return detach_path(b"/proc/self/fd/%d/" % dir_fd + os.fsencode(name))


def detach_path(path: str | bytes) -> OSError | None:
    """As detach, of the mount over `path` (its last component not followed)."""
    if _libc.umount2(os.fsencode(path), _MNT_DETACH | _UMOUNT_NOFOLLOW) == 0:
        return None
    code = ctypes.get_errno()
    return OSError(code, os.strerror(code), os.fsdecode(path))


@dataclass(frozen=True, slots=True)
class Place:
    """Where a directory is: its st_dev and mount ID (None where the system cannot say)."""

    dev: int
    mnt: int | None

    def holds(self, st: os.stat_result, mnt: int | None) -> bool:
        """Whether an entry (its stat, its mount ID) is on this mount."""
        return not differs(st, mnt, self.dev, self.mnt)


_anchors: dict[str, Place] = {}  # a runs' directory (as its paths are built) -> its place
_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()
_WARNED_MAX = 1024


def record_anchor(top: Path | str) -> Place:
    """Blocking: the mount the directory `top` (DATA/runs) is on, read once and kept as the
    anchor of every check on paths under it. Called at start, before any program runs."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        place = Place(os.fstat(fd).st_dev, mount_id(fd))
    finally:
        os.close(fd)
    _anchors[os.fspath(top)] = place
    return place


def forget_anchor(top: Path | str) -> None:
    _anchors.pop(os.fspath(top), None)


def anchor_of(path: Path | str) -> tuple[str, Place] | None:
    """The recorded anchor whose directory `path` is under (or is), if one is: a string
    comparison, no lookup."""
    text = os.fspath(path)
    for top, place in _anchors.items():
        if text.startswith(top) and (len(text) == len(top) or text[len(top)] == "/"):
            return top, place
    return None


def covered(top: str, place: Place) -> bool:
    """Whether the directory `top`, looked up again by path, is on another mount than the
    one recorded: a mount covers it."""
    dev, mnt = place_of(top)
    return dev != place.dev or (mnt is not None and place.mnt is not None and mnt != place.mnt)


def warn_once(event: str, path: Path | str, **fields: object) -> None:
    """A warning naming `path`, the first time `event` meets it."""
    key = (event, os.fspath(path))
    with _warned_lock:
        if key in _warned or len(_warned) >= _WARNED_MAX:
            return
        _warned.add(key)
    log.warning(event, path=key[1], **fields)
