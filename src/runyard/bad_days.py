"""What a bad day makes of the work: a store away or busy, a disk full or failing, no
descriptor left. Expected, and said in one line naming the cause, never as a traceback: a
full disk used to log a traceback for every write refused (the dispatcher's every 0.5 s),
filling what was left of it. Anything else is a bug, and keeps its traceback."""

from __future__ import annotations

import errno
from typing import Any

from runyard.errors import StorageFullError, UnavailableError

_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EMFILE, errno.ENFILE})


def expected(exc: BaseException) -> bool:
    if isinstance(exc, UnavailableError | StorageFullError):
        return True
    return isinstance(exc, OSError) and exc.errno in _ERRNOS


def log_failure(logger: Any, event: str, exc: BaseException, **fields: Any) -> None:
    """From an `except` block: a warning with the error if `exc` is a bad day's, else the
    event with its traceback."""
    if expected(exc):
        logger.warning(event, error=str(exc)[:300], **fields)
    else:
        logger.exception(event, **fields)
