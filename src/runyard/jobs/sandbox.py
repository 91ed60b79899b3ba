"""A job's `[sandbox]` table: what a sandboxed program may see, checked when the job loads.

The sandbox itself (bubblewrap's argv) is built by the supervisor (execution/sandbox.py);
here is only what a job file may ask for, and whether this host and server can give it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_BINDS = 64
MAX_PATH = 4096


class Sandbox(BaseModel):
    """Declared per job; absent means not sandboxed (unless the server requires it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    network: Literal["none", "host"] = Field(
        default="none", description="none: a network namespace of its own, loopback only"
    )
    ro: list[str] = Field(default_factory=list, max_length=MAX_BINDS, description="read-only")
    rw: list[str] = Field(default_factory=list, max_length=MAX_BINDS, description="read-write")
    writable: list[Literal["workspace", "tmp"]] = Field(
        default_factory=lambda: list[Literal["workspace", "tmp"]](["workspace", "tmp"]),
        description="which of its own places the program may write",
    )

    @field_validator("ro", "rw")
    @classmethod
    def _absolute(cls, v: list[str]) -> list[str]:
        for path in v:
            if not path.startswith("/") or len(path) > MAX_PATH or "\0" in path:
                raise ValueError(f"bind {path[:200]!r} must be an absolute path")
            if os.path.normpath(path) != path or path == "/":
                raise ValueError(f"bind {path[:200]!r} must be a plain path (no '..', '.', '//')")
        return v


@dataclass(frozen=True, slots=True)
class SandboxPolicy:
    """What the server knows at load: where its own files are (never bound into a sandbox),
    whether every job must be sandboxed, and how to find bubblewrap."""

    forbidden: tuple[Path, ...] = ()  # the data directory, the runs directory
    required: bool = False  # require_sandbox: a job without [sandbox] gets the default one
    which: str = "bwrap"

    def bwrap(self) -> str | None:
        """Blocking (a PATH lookup): bubblewrap's path, or None on a host without it."""
        return shutil.which(self.which)


def check(sandbox: Sandbox, policy: SandboxPolicy) -> str | None:
    """Blocking (stats): why this host cannot give `sandbox`, or None when it can."""
    if policy.bwrap() is None:
        return "[sandbox] needs bubblewrap (`bwrap`), not found on this host (scripts/bwrap)"
    for kind in ("ro", "rw"):
        for path in getattr(sandbox, kind):
            real = Path(os.path.realpath(path))
            for own in policy.forbidden:
                if real == own or own in real.parents or real in own.parents:
                    return f"sandbox.{kind}: {path} is, holds or is inside runyard's {own}"
            if not real.exists():
                return f"sandbox.{kind}: {path} does not exist"
    return None
