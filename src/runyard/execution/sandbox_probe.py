"""Readiness of the sandbox: does bubblewrap still make one here? Cheap, cached, in a thread.

A job that needs bwrap on a host without it never loads (jobs/sandbox.py); this is for the
host that loses it later (uninstalled, user namespaces turned off, a broken upgrade).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable

PROBE_TIMEOUT_S = 5.0
FAILED_AGAIN_S = 1.0  # a failing probe is looked at again soon: readiness returns with it


def probe(which: str = "bwrap") -> str | None:
    """Blocking: why bwrap cannot make a sandbox like a run's, or None when it can."""
    bwrap = shutil.which(which)
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed: sandboxed jobs cannot run (scripts/bwrap)"
    argv = [bwrap, "--die-with-parent", "--unshare-all", "--cap-drop", "ALL",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",  # noqa: S108
            "--", "true"]  # fmt: skip
    try:
        done = subprocess.run(argv, capture_output=True, timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return f"bwrap did not make a sandbox within {PROBE_TIMEOUT_S:g} s"
    except OSError as exc:
        return f"bwrap cannot start: {exc.strerror or exc}"
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip()[:300] or f"exit {done.returncode}"
        return f"bwrap cannot make a sandbox: {said}"
    return None


class SandboxProbe:
    """`problem()` for readiness: probed at most every `every_s` (sooner after a failure),
    and only while `needed()` (a loaded job is sandboxed, or the server requires it)."""

    def __init__(self, needed: Callable[[], bool], every_s: float = 30.0) -> None:
        self.needed = needed
        self.every_s = every_s
        self._last: str | None = None
        self._at = float("-inf")

    async def problem(self) -> str | None:
        if not self.needed():
            return None
        wait = FAILED_AGAIN_S if self._last is not None else self.every_s
        if time.monotonic() - self._at >= min(wait, self.every_s):
            self._last = await asyncio.to_thread(probe)
            self._at = time.monotonic()
        return self._last
