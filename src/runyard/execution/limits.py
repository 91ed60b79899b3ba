"""What a job's limits do to its program: rlimits and the run-as user set up between fork and
exec, and the marker left in a log that reached its cap. Used by the supervisor."""

from __future__ import annotations

import contextlib
import os
import pwd
import resource
import signal
from collections.abc import Callable
from typing import Any

# limit name -> (rlimit, bytes or count per unit, hard above soft)
_RLIMITS: dict[str, tuple[int, float, int]] = {
    "memory_mb": (resource.RLIMIT_AS, 2**20, 0),
    "cpu_s": (resource.RLIMIT_CPU, 1, 5),  # soft: SIGXCPU; 5 s later the hard limit kills
    "open_files": (resource.RLIMIT_NOFILE, 1, 0),
    "max_log_mb": (resource.RLIMIT_FSIZE, 2**20, 0),
}


def limiter(limits: dict[str, Any]) -> Callable[[], None]:
    """Runs in the child between fork and exec: set its rlimits (and, to cut rather than
    kill at the log cap, ignore SIGXFSZ so writes past it just fail)."""
    settings = [(res, int(limits[name] * unit), extra)
                for name, (res, unit, extra) in _RLIMITS.items() if name in limits]  # fmt: skip
    ignore_xfsz = "max_log_mb" in limits and limits.get("on_log_cap", "cut") == "cut"

    def apply() -> None:
        for res, value, extra in settings:
            resource.setrlimit(res, (value, value + extra))
        if ignore_xfsz:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return apply


def hand_over(run_as: str, cwd: str, progress: str | None) -> tuple[int, int]:
    """For `run_as`: the user's ids, with the workspace and progress file given to them."""
    entry = pwd.getpwnam(run_as)
    uid, gid = entry.pw_uid, entry.pw_gid
    # fwalk: every step by a descriptor opened without following links, so a directory the
    # user's other programs swap for a link meanwhile never leads the walk (root) out of it
    for _, dirs, files, here in os.fwalk(cwd):
        for name in [*dirs, *files]:
            os.chown(name, uid, gid, dir_fd=here, follow_symlinks=False)
    os.chown(cwd, uid, gid)
    if progress:
        fd = os.open(progress, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.fchown(fd, uid, gid)
        os.close(fd)
    return uid, gid


def mark_cut(log_path: str, cap: int) -> None:
    with contextlib.suppress(OSError):
        if os.stat(log_path).st_size >= cap:  # noqa: PTH116
            # the run's own file or none: not through a link its program put there
            fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK)
            try:
                os.write(fd, f"\n[runyard: log cut at {cap} bytes (limits.max_log_mb)]\n".encode())
            finally:
                os.close(fd)
