"""Admission: whether more queued runs may be made, against a job's max_queue, the server's
and the disk's reserve; a queue that is full says when to try again, at the recent rate."""

from __future__ import annotations

import math

from runyard.errors import QueueFullError
from runyard.services.admission_holds import Hold, Holds
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
        self._holds = Holds()  # admitted, not yet stored

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
    ) -> Hold:
        """Refuse (429, with when to try again) `adding` more queued runs of `job` that would
        pass its max_queue or the server's; and (507) runs whose `writing` bytes would take
        the disk's reserve (min_free_mb). Every way runs are made is admitted here: a submit,
        a batch, a schedule's fire. The runs admitted are held against the limits until the
        caller releases the hold, once its insert is over (stored or not): a count of the
        store does not see them before, and fifty submits at once each saw an empty queue
        (a probe: 15 queued of a max_queue of 5)."""
        counts: list[tuple[tuple[int, int], str | None, int]] = []
        try:
            if job_max_queue is not None:
                counts.append((await self._holds.count(self.store, job), job, job_max_queue))
            if self.max_queue is not None:
                counts.append((await self._holds.count(self.store, None), None, self.max_queue))
            # from here to the hold, no await: what each check saw holds when it is taken
            for (stored, began), of, limit in counts:
                queued = stored + self._holds.unseen(began, of)
                if queued + adding > limit:
                    raise self._queue_full(
                        _full(queued, adding, of, limit), queued + adding - limit
                    )
            hold = self._holds.take(job, adding)
        finally:
            for (_, began), _, _ in counts:
                self._holds.counted(began)
        if self.disk is not None:
            try:
                await self.disk.check(writing)
            except BaseException:
                hold.release()
                raise
        return hold


def _full(queued: int, adding: int, job: str | None, limit: int) -> str:
    more = f": {adding} more would pass" if adding > 1 else ","
    if job is None:
        return f"{queued} runs are queued{more} the server's max_queue ({limit})"
    return f"job {job!r} has {queued} queued runs{more} its max_queue ({limit})"
