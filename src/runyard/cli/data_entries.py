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

from runyard.data_dir import expected, wrong_kind
from runyard.execution.protocol import LOCK_NAME, SOCKET_NAME


def entries_problem(data_dir: Path, database: Path | None) -> str | None:
    """Why one of the data directory's entries cannot be used, or None."""
    remedy = "move it aside, then start again"
    return wrong_kind(expected(data_dir, database), remedy) or orphaned_supervisor(data_dir)


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
