"""What each of a job's `[limits]` sets on its program, and whether this host lets it: the
supervisor sets them (execution/limits.py), and a job whose limit no program here could be
given fails its load rather than every run (jobs/run_needs.py)."""

from __future__ import annotations

import os
import resource
from collections.abc import Mapping
from typing import Any

# limit name -> (rlimit, bytes or count per unit, hard above soft)
RLIMITS: dict[str, tuple[int, float, int]] = {
    "memory_mb": (resource.RLIMIT_AS, 2**20, 0),
    "cpu_s": (resource.RLIMIT_CPU, 1, 5),  # soft: SIGXCPU; 5 s later the hard limit kills
    "open_files": (resource.RLIMIT_NOFILE, 1, 0),
    "max_log_mb": (resource.RLIMIT_FSIZE, 2**20, 0),
}
NAMES = {
    resource.RLIMIT_AS: "RLIMIT_AS",
    resource.RLIMIT_CPU: "RLIMIT_CPU",
    resource.RLIMIT_NOFILE: "RLIMIT_NOFILE",
    resource.RLIMIT_FSIZE: "RLIMIT_FSIZE",
}


def may_raise(run_as: str | None, sandboxed: bool) -> bool:
    """Whether the program's process may raise its hard limits: a root supervisor's child
    that stays root, or becomes bubblewrap (the limits are set before the change of user,
    bubblewrap's before its own)."""
    return os.geteuid() == 0 and (run_as is None or sandboxed)


def hard_for(res: int, value: int, extra: int, raising: bool) -> int | None:
    """The hard limit to set with soft limit `value`: `extra` above it, within what this
    process's own hard limit allows when the child may not raise it; None if even `value`
    is over that."""
    wanted = value + extra
    if raising:
        return wanted
    hard = resource.getrlimit(res)[1]
    if hard == resource.RLIM_INFINITY or wanted <= hard:
        return wanted
    return hard if value <= hard else None  # the grace above the soft limit: what it allows


def over_hard(name: str, asked: float) -> str:
    res, unit, _ = RLIMITS[name]
    over = resource.getrlimit(res)[1] / unit
    return f"limits.{name} ({_shown(asked)}) is over this host's hard {NAMES[res]} ({_shown(over)})"


def _shown(value: float) -> str:
    """1048576, not 1.04858e+06; 0.5 as it is."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def refused(limits: Mapping[str, Any], raising: bool) -> str | None:
    """Why a program here could not be given `limits` (set ones, by name), if it could not."""
    for name, (res, unit, extra) in RLIMITS.items():
        if limits.get(name) is not None and hard_for(
            res, int(limits[name] * unit), extra, raising
        ) is None:  # fmt: skip
            return over_hard(name, limits[name])
    return None
