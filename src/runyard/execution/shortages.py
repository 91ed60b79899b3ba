"""Shortages: the machine short of room for now (a disk full or failing, memory, descriptors),
which waiting may cure, told from refusals no wait ever will (a file where a directory should
be, a permission). A run refused for want of room waits in the queue; readiness says why."""

from __future__ import annotations

import errno
import time
from pathlib import Path

SHORTAGES = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.ENOMEM, errno.EMFILE, errno.ENFILE,
})  # fmt: skip
SHOWN_S = 60.0  # a run refused for want of room is retried at least this often (dispatch.py)


def shortage(exc: BaseException) -> bool:
    """Did `exc` fail for want of room that waiting may give back?"""
    return isinstance(exc, OSError) and exc.errno in SHORTAGES


def unplaced(exc: BaseException, runs_dir: Path) -> bool:
    """Did a run's directory fail to be made because something not a directory is where the
    data directory keeps the runs (a file put there)? The server's fault, not the run's: the
    run waits queued while readiness says what is in the way (check `data_dir`), until it is
    moved. A blocking stat, on this failure only."""
    return isinstance(exc, OSError) and exc.errno == errno.ENOTDIR and not runs_dir.is_dir()


def fork_shortage(exc: BaseException) -> bool:
    """A program that could not start for want of room, or of a process slot (EAGAIN)."""
    return shortage(exc) or getattr(exc, "errno", None) == errno.EAGAIN


class LastShortage:
    """The last refusal for want of room of something no probe can try again (a fork, a copy
    the server makes for a run): shown until the next success, or until SHOWN_S after it.
    Whoever retries does so at least that often, so one still failing stays shown, and one
    nobody retries any more (its runs cancelled) does not linger."""

    def __init__(self) -> None:
        self._last: tuple[float, str] | None = None

    def failed(self, why: str) -> None:
        self._last = (time.monotonic(), why)

    def succeeded(self) -> None:
        self._last = None

    def shown(self, point: str) -> dict[str, str]:
        """As readiness lists failing writes: {point: why} while shown, else nothing."""
        if self._last is None or time.monotonic() - self._last[0] > SHOWN_S:
            return {}
        return {point: self._last[1]}
