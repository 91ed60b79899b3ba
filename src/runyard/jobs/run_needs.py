"""What every run of a job needs that its file can be checked for where it is loaded: a
program to run, a workspace source that is a local directory, a `run_as` user the host has,
limits a program here may be given. A probe loaded jobs lacking each, and every run of them
failed."""

from __future__ import annotations

import pwd
from pathlib import Path
from typing import TYPE_CHECKING

from runyard import rlimits
from runyard.jobs.workspace_source import split_source

if TYPE_CHECKING:
    from runyard.jobs.spec import JobSpec


def unmet(spec: JobSpec, jobs_dir: Path) -> tuple[str, bool] | None:
    """Why every run would fail, and whether that is the host's (a directory or a user that
    may appear: the file is looked at again at each scan); None if nothing is missing."""
    if not spec.command[0]:
        return "command: its first element, the program, is empty", False
    if spec.workspace != "empty":
        try:  # a ref or a URL every run would refuse
            kind, source, _ = split_source(spec.workspace)
        except ValueError as exc:
            return f"workspace: {exc}", False
        if spec.executor == "local" and not (jobs_dir / source).is_dir():
            return f"workspace: the {kind} source {source!r} is no directory here", True
    if spec.run_as is not None:
        try:
            pwd.getpwnam(spec.run_as)
        except KeyError:
            return f"run_as: this host has no user {spec.run_as!r}", True
    if spec.executor == "local":  # (a Slurm node has its own limits)
        raising = rlimits.may_raise(spec.run_as, spec.sandbox is not None)
        if (why := rlimits.refused(spec.limits.model_dump(), raising)) is not None:
            return why, True
    return None
