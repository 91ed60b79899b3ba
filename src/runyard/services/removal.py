"""Removing a finished run's files, before its record: a removal that fails keeps the record,
so the delete (or the next retention sweep) can be retried instead of leaving files nobody
can name any more."""

from __future__ import annotations

import structlog

from runyard.errors import UnavailableError
from runyard.execution.base import Executor

log = structlog.get_logger(__name__)


class FilesRemainError(UnavailableError):
    title, slug = "Files not removed", "files-remain"


async def remove_run_files(executor: Executor, run_id: str) -> None:
    try:
        await executor.remove_files(run_id)
    except OSError as exc:
        log.warning("run_files_not_removed", run_id=run_id, error=str(exc))
        raise FilesRemainError(
            f"the files of run {run_id} could not all be removed ({exc.strerror or exc}); "
            "the run is kept: retry"
        ) from None
