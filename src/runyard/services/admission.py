"""Admission: whether more queued runs may be made, against a job's max_queue, the server's
and the disk's reserve; a queue that is full says when to try again, at the recent rate."""

from __future__ import annotations

import math

from runyard.errors import QueueFullError
from runyard.models import RunState
from runyard.services.diskspace import DiskGuard
from runyard.services.waiters import FinishRate
from runyard.store import Store


class Admission:
    def __init__(
        self, store: Store, finish_rate: FinishRate, max_queue: int | None,
        disk: DiskGuard | None,
    ) -> None:  # fmt: skip
        self.store = store
        self.finish_rate = finish_rate
        self.max_queue = max_queue
        self.disk = disk

    def retry_after(self, excess: int) -> int:
        """Seconds until about `excess` runs will have left the queue, at the recent rate."""
        rate = self.finish_rate.per_second()
        if rate <= 0:
            return 30
        return max(1, min(3600, math.ceil(excess / rate)))

    def retry_after_ms(self, excess: int) -> int:
        """The same in milliseconds (at least 100), for `retry-after-ms`."""
        rate = self.finish_rate.per_second()
        if rate <= 0:
            return 30_000
        return max(100, min(3_600_000, math.ceil(excess / rate * 1000)))

    def _queue_full(self, detail: str, excess: int) -> QueueFullError:
        return QueueFullError(detail, self.retry_after(excess), self.retry_after_ms(excess))

    async def admit(
        self, job: str, job_max_queue: int | None, adding: int = 1, writing: int = 0
    ) -> None:
        """Refuse (429, with when to try again) `adding` more queued runs of `job` that would
        pass its max_queue or the server's; and (507) runs whose `writing` bytes would take
        the disk's reserve (min_free_mb). Every way runs are made is admitted here: a submit,
        a batch, a schedule's fire."""
        if job_max_queue is not None:
            queued = await self.store.count_runs(RunState.QUEUED, job)
            if queued + adding > job_max_queue:
                raise self._queue_full(
                    f"job {job!r} has {queued} queued runs"
                    + (f": {adding} more would pass" if adding > 1 else ",")
                    + f" its max_queue ({job_max_queue})",
                    queued + adding - job_max_queue,
                )
        if self.max_queue is not None:
            queued = await self.store.count_runs(RunState.QUEUED)
            if queued + adding > self.max_queue:
                raise self._queue_full(
                    f"{queued} runs are queued"
                    + (f": {adding} more would pass" if adding > 1 else ",")
                    + f" the server's max_queue ({self.max_queue})",
                    queued + adding - self.max_queue,
                )
        if self.disk is not None:
            await self.disk.check(writing)
