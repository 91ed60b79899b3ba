"""Named crash points for recovery tests: `RUNYARD_FAILPOINTS=before_spawn,before_end`.

At a listed point the server SIGKILLs itself, exactly as a crash would, so tests can stop it
between two specific steps instead of hoping a signal from outside lands there. Unset (the
normal case) it costs one set lookup.
"""

from __future__ import annotations

import os
import signal

_ACTIVE = frozenset(p for p in os.environ.get("RUNYARD_FAILPOINTS", "").split(",") if p)

POINTS = frozenset({"before_spawn", "after_spawn", "before_end"})


def hit(name: str) -> None:
    if name in _ACTIVE:
        os.kill(os.getpid(), signal.SIGKILL)
