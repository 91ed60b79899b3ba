"""The data directory's own entries, checked before anything starts: each is absent or of the
kind the server keeps there. A directory where the database or the supervisor's socket, lock
or log belongs, a file where the runs are kept, stopped the start with a traceback from deep
inside (or, for the uploads, let readiness say ok while every upload failed); said here
instead, with the path, what is there, and what to do."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from pathlib import Path

from runyard.execution.protocol import LOCK_NAME, LOG_NAME, SOCKET_NAME

REGULAR, DIRECTORY, SOCKET = stat.S_IFREG, stat.S_IFDIR, stat.S_IFSOCK
_KINDS = {
    stat.S_IFREG: "a regular file",
    stat.S_IFDIR: "a directory",
    stat.S_IFSOCK: "a socket",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFLNK: "a symbolic link",
}


def expected(data_dir: Path, database: Path | None) -> dict[Path, tuple[tuple[int, ...], str]]:
    """Each entry: the kinds it may be, and what runyard keeps there."""
    found: dict[Path, tuple[tuple[int, ...], str]] = {
        data_dir / "runs": ((DIRECTORY,), "the runs' directories"),
        data_dir / "uploads": ((DIRECTORY,), "the uploaded files"),
        # a regular file: a socket left by a supervisor that died, removed when one starts
        data_dir / SOCKET_NAME: ((SOCKET, REGULAR), "the supervisor's socket"),
        data_dir / LOCK_NAME: ((REGULAR,), "the supervisor's lock"),
        data_dir / LOG_NAME: ((REGULAR,), "the supervisor's log"),
    }
    if database is not None:
        for suffix in ("", "-wal", "-shm"):
            path = database.with_name(database.name + suffix)
            found[path] = ((REGULAR,), "the database")
    return found


def entries_problem(data_dir: Path, database: Path | None) -> str | None:
    """Why one of the data directory's entries cannot be used, or None."""
    for path, (kinds, purpose) in expected(data_dir, database).items():
        try:
            kind = stat.S_IFMT(path.stat().st_mode)
        except FileNotFoundError:
            if path.is_symlink():
                return f"{path} is a symbolic link to nothing, where runyard keeps {purpose}"
            continue  # made when needed
        except OSError as exc:
            return f"{path} cannot be examined ({exc.strerror}); runyard keeps {purpose} there"
        if kind not in kinds:
            what = _KINDS.get(kind, "something else")
            return (
                f"{path} is {what}, where runyard keeps {purpose}: move it aside, then start again"
            )
    return orphaned_supervisor(data_dir)


def orphaned_supervisor(data_dir: Path) -> str | None:
    """A supervisor alive (it holds the lock) whose socket is gone or replaced: no server can
    reach it, and no new one may start beside it (the lock), so it must be stopped."""
    sock, lock = data_dir / SOCKET_NAME, data_dir / LOCK_NAME
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(sock.stat().st_mode):
            return None
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None  # no lock: no supervisor holds it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return (
            f"a supervisor still holds {lock}, but {sock} is not its socket (removed or "
            f"replaced), so no server can reach it: stop that supervisor (`fuser {lock}` "
            "names it; its programs are then ended as lost), then start again"
        )
    except OSError:
        return None
    finally:
        os.close(fd)  # the shared lock, if taken, goes with it
    return None
