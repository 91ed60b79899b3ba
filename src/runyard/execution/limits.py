"""What a job's limits do to its program: rlimits and the run-as user set up between fork and
exec, and the marker left in a log that reached its cap. Used by the supervisor."""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import resource
import signal
import stat
from collections.abc import Callable
from typing import Any

from runyard.rlimits import NAMES, RLIMITS, hard_for, over_hard


class LimitRefusedError(OSError):
    """A job's [limits] this host does not let its program have: the run fails saying so
    (a failure inside the child would only say "Exception occurred in preexec_fn")."""


def limiter(limits: dict[str, Any], *, may_raise: bool) -> Callable[[], None]:
    """Runs in the child between fork and exec: set its rlimits (and, to cut rather than
    kill at the log cap, ignore SIGXFSZ so writes past it just fail). `may_raise`: the child
    may raise its hard limits (root, not yet another user); otherwise a limit over the
    supervisor's own hard one is a LimitRefusedError here, before any fork."""
    settings = []
    for name, (res, unit, extra) in RLIMITS.items():
        if name in limits:
            value = int(limits[name] * unit)
            hard = hard_for(res, value, extra, may_raise)
            if hard is None:
                raise LimitRefusedError(errno.EPERM, over_hard(name, limits[name]))
            settings.append((name, res, value, hard))
    ignore_xfsz = "max_log_mb" in limits and limits.get("on_log_cap", "cut") == "cut"

    def apply() -> None:
        for name, res, value, hard in settings:
            try:
                resource.setrlimit(res, (value, hard))
            except (OSError, ValueError) as exc:
                # the exception itself never reaches the supervisor: the log says which
                os.write(2, f"runyard: cannot set limits.{name} ({NAMES[res]}): {exc}\n".encode())
                raise
        if ignore_xfsz:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return apply


def hand_over(run_as: str, cwd: str, progress: str | None) -> tuple[int, int]:
    """For `run_as`: the user's ids, with the workspace and progress file given to them.

    Only what is the workspace's alone changes hands: its directories, its links (their own
    node, never what they point at) and each regular file of one link. A file of more than
    one link is shared with a place outside (a staged input is the stored upload itself,
    execution/inputs.py, a probe: its new owner rewrote it for every later run; a link a
    program planted could be any file of the host's on that filesystem): it stays as it is.
    Each entry is changed through a descriptor opened without following links, the check
    made on what was opened, so one swapped for a link meanwhile is never what changes."""
    entry = pwd.getpwnam(run_as)
    uid, gid = entry.pw_uid, entry.pw_gid
    # fwalk: every step by a descriptor opened without following links, so a directory the
    # user's other programs swap for a link meanwhile never leads the walk (root) out of it
    for _, dirs, files, here in os.fwalk(cwd):
        for name in dirs:
            _give(name, here, uid, gid, os.O_DIRECTORY)
        for name in files:
            try:
                mode = os.stat(name, dir_fd=here, follow_symlinks=False).st_mode
                if stat.S_ISLNK(mode):
                    os.chown(name, uid, gid, dir_fd=here, follow_symlinks=False)  # the link alone
                elif stat.S_ISREG(mode):  # never opened else: opening a device or FIFO acts
                    _give(name, here, uid, gid, 0)
            except FileNotFoundError:
                continue  # gone since it was listed
    os.chown(cwd, uid, gid)
    if progress:
        fd = os.open(progress, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
        os.fchown(fd, uid, gid)
        os.close(fd)
    return uid, gid


def _give(name: str, here: int, uid: int, gid: int, kind: int) -> None:
    """Hand one directory (`kind` O_DIRECTORY) or regular file (seen so when listed) of one
    link over; anything else (a file linked elsewhere, an entry gone or swapped) is left."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | kind
    try:
        fd = os.open(name, flags, dir_fd=here)
    except OSError:
        return  # gone, or swapped for a link or another kind since it was listed
    try:
        found = os.fstat(fd)
        if kind or (stat.S_ISREG(found.st_mode) and found.st_nlink == 1):
            os.fchown(fd, uid, gid)
    finally:
        os.close(fd)


def mark_cut(log_path: str, cap: int | None) -> bool | None:
    """True if the log reached its cap (a line saying so is then added past it), else None
    (the exit record leaves the field out)."""
    try:
        if cap is None or os.stat(log_path).st_size < cap:  # noqa: PTH116
            return None
    except OSError:
        return None
    with contextlib.suppress(OSError):  # a full disk must not stop the exit's record
        # the run's own file or none: not through a link its program put there
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            os.write(fd, f"\n[runyard: log cut at {cap} bytes (limits.max_log_mb)]\n".encode())
        finally:
            os.close(fd)
    return True
