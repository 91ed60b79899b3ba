"""Submitting, reading, cancelling and deleting runs: what the run routes call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import Any, TypeVar

import structlog

from runyard import failpoints
from runyard.clock import Clock, new_id
from runyard.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    StorageFullError,
    StorageIOError,
    UnavailableError,
)
from runyard.execution.base import Executor
from runyard.jobs import JobRegistry
from runyard.jobs.params import ParamError
from runyard.jobs.spec import Job
from runyard.models import Attempt, Page, Run, RunFilter, RunState
from runyard.services.admission import Admission
from runyard.services.admission_holds import Hold
from runyard.services.attempts import Attempts
from runyard.services.diskspace import DiskGuard
from runyard.services.idempotency import asks_for, request_hash
from runyard.services.log_ranges import LogRange, close_opened, open_range, read_all
from runyard.services.removal import Removal
from runyard.services.transitions import Transitions
from runyard.services.uploads import Fetch, Seen, Uploads, check_files, file_values, named_uploads
from runyard.services.waiters import EndWaiters, FinishRate
from runyard.services.wakeup import QueueWakeup
from runyard.store import Store

MAX_LOG_CHUNK = 4 * 1024 * 1024
log = structlog.get_logger(__name__)


ProgressRefresher = Callable[[str, int], Awaitable[None]]
Announcer = Callable[[str, dict[str, Any]], None]
T = TypeVar("T")


def _users(job: Job, runs: list[Run]) -> dict[str, list[str]]:
    """upload id -> the runs (all of `job`) that name it."""
    users: dict[str, list[str]] = {}
    for run in runs:
        for upload_id in set(file_values(job.spec, run.params).values()):
            users.setdefault(upload_id, []).append(run.id)
    return users


def new_run(
    job: Job,
    values: dict[str, Any],
    clock: Clock,
    *,
    priority: int | None,
    labels: dict[str, str],
    batch_id: str | None = None,
    schedule_id: str | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> Run:
    """A queued run of `job` with validated `values`, carrying the job as it is now."""
    return Run(
        id=new_id(),
        job=job.name,
        params=values,
        state=RunState.QUEUED,
        priority=job.spec.priority if priority is None else priority,
        created_at=clock.now(),
        labels=labels,
        batch_id=batch_id,
        schedule_id=schedule_id,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        spec=job.snapshot,
    )


class RunService:
    def __init__(
        self,
        store: Store,
        registry: JobRegistry,
        executor: Executor,
        attempts: Attempts,
        transitions: Transitions,
        queue: QueueWakeup,
        clock: Clock,
        *,
        waiters: EndWaiters,
        finish_rate: FinishRate,
        progress: ProgressRefresher | None = None,
        announce: Announcer | None = None,
        max_queue: int | None = None,
        disk: DiskGuard | None = None,
        uploads: Uploads | None = None,
        fetch_upload: Fetch | None = None,
        removal: Removal | None = None,
        claiming: Callable[[], bool] | None = None,
    ) -> None:
        self.removal = removal or Removal(store, executor)  # shared with retention
        self.fetch_upload = fetch_upload  # in a cluster: an upload another member holds
        self.accepting = True
        self.uploads = uploads  # what file params name
        self.disk = disk
        self.progress_refresher = progress
        # tells overviews (the feed) that runs appeared or went away
        self.announce: Announcer = announce or (lambda kind, data: None)
        self.store = store
        self.registry = registry
        self.executor = executor  # the run's files (logs, removal)
        self._attempts = attempts  # cancel requests to a running attempt
        self.transitions = transitions
        self.queue = queue  # a new run may be claimable: the dispatcher looks
        # whether the dispatcher's claim is under way, which a submit's insert may have shared
        # its transaction with (api/routes/runs.py lets its launch go first)
        self.claiming = claiming or (lambda: False)
        self.waiters = waiters
        self.finish_rate = finish_rate
        self.clock = clock
        self.admission = Admission(store, finish_rate, max_queue, disk)

    async def submit(
        self,
        job_name: str,
        params: dict[str, Any],
        *,
        priority: int | None = None,
        labels: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[Run, bool]:
        """Validate and store a queued run; (run, False) when the idempotency key was used."""
        labels = labels or {}
        self.check_accepting()
        job = await self.registry.get(job_name)
        if job is None:
            if idempotency_key is not None:  # a replay is answered, the job's file gone or not
                existing = await self._replay_unchecked(
                    idempotency_key, job_name, params, priority, labels
                )
                if existing is not None:
                    return existing, False
            raise NotFoundError(self.registry.undeclared(job_name), field="job")
        try:
            values = job.validate_params(params)
        except ParamError as exc:
            raise InvalidInputError(str(exc), errors=exc.errors) from None
        if job.spec.has_files:
            await self.check_files(job, values, {})
        digest = None  # only a replay under the same key compares requests
        asked: tuple[str, ...] = ()
        if idempotency_key is not None:
            # of the params as validated: a default sent or left out, 1 or 1.0 for a float,
            # ask for the same run (a stored run's params sent back are the same request);
            # also as sent, which is how runs stored before this were hashed
            # and of the priority it gets: none given is the job's, as given explicitly
            resolved = job.spec.priority if priority is None else priority
            digest = request_hash(job_name, values, resolved, labels)
            asked = (
                digest,
                request_hash(job_name, values, priority, labels),
                request_hash(job_name, params, priority, labels),
            )
            existing = await self._by_key(idempotency_key, asked)
            if existing is not None:
                return existing, False
        hold = await self.admit(job_name, job.spec.max_queue)
        try:  # held from its admission until its insert is over, whatever happens between
            run = self.new_run(
                job, values, priority=priority, labels=labels, idempotency_key=idempotency_key,
                request_hash=digest,
            )  # fmt: skip
            stored, created = await self.stored_with_uploads(job, [run], partial(self._insert, run))
        finally:
            hold.release()
        if not created:  # the key was taken meanwhile (so there is a key, and a digest)
            await self.unreference(job, [run])
            return self._same_request(stored, asked), False
        self.announce("submitted", {"id": stored.id, "job": stored.job})
        return stored, True

    async def _insert(self, run: Run) -> tuple[Run, bool]:
        # The dispatcher is woken before the insert is awaited: its claim then joins the same
        # store turn (group_commit.py), after the insert in one transaction, and a free slot
        # takes the run without another round trip. If the insert fails, it claims nothing.
        self.queue.set_claimable()
        return await self.store.insert_run(run)

    async def check_files(self, job: Job, values: dict[str, Any], seen: Seen) -> None:
        if self.uploads is None:
            raise InvalidInputError("this server takes no uploads", field="params")
        await check_files(self.uploads, job.spec, values, seen, self.fetch_upload)

    async def stored_with_uploads(
        self, job: Job, runs: list[Run], store: Callable[[], Awaitable[T]]
    ) -> T:
        """`store` the runs (all of `job`), the uploads they use marked first, so none can
        expire meanwhile; the marks taken back if the store refuses them."""
        if job.spec.has_files and self.uploads is not None:
            await self.uploads.reference(_users(job, runs))
        try:
            return await store()
        except Exception:
            await self.unreference(job, runs)
            raise

    async def unreference(self, job: Job, runs: list[Run]) -> None:
        """The runs were not stored: their marks go (a request's own uploads can then be
        taken back). Never raises: the store's refusal is what the caller reports."""
        if self.uploads is not None and job.spec.has_files:
            try:
                await self.uploads.unreference(_users(job, runs))
            except OSError as exc:  # the expiry sweep drops markers of runs that do not exist
                log.warning("upload_markers_kept", runs=len(runs), error=str(exc))

    def stop_accepting(self) -> None:
        """Shutting down: every submission from now on is refused with 503."""
        self.accepting = False

    def check_accepting(self) -> None:
        if not self.accepting:
            raise UnavailableError("the server is shutting down; submit again shortly", 5)

    def new_run(
        self,
        job: Job,
        values: dict[str, Any],
        *,
        priority: int | None,
        labels: dict[str, str],
        batch_id: str | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
    ) -> Run:
        return new_run(
            job, values, self.clock, priority=priority, labels=labels, batch_id=batch_id,
            idempotency_key=idempotency_key, request_hash=request_hash,
        )  # fmt: skip

    async def _by_key(self, key: str, asked: tuple[str, ...]) -> Run | None:
        # A replay is answered before admission: a full queue must not refuse it.
        run = await self.store.get_run_by_idempotency_key(key)
        return None if run is None else self._same_request(run, asked)

    async def _replay_unchecked(
        self,
        key: str,
        job: str,
        params: dict[str, Any],
        priority: int | None,
        labels: dict[str, str],
    ) -> Run | None:
        """The run `key` made, its job's file removed or broken since, when the request asks
        for it again: what the request gives is what the run has (a param left out took its
        default then, a priority left out the job's). A client retrying after a timeout was
        told the job did not exist, and could take it that nothing was made (a probe)."""
        run = await self.store.get_run_by_idempotency_key(key)
        if run is None:
            return None
        if not asks_for(run, job, params, priority, labels):
            raise ConflictError(
                "this Idempotency-Key was used for a different request", run_id=run.id
            )
        return run

    @staticmethod
    def _same_request(run: Run, asked: tuple[str, ...]) -> Run:
        if run.request_hash not in asked:
            raise ConflictError(
                "this Idempotency-Key was used for a different request", run_id=run.id
            )
        return run

    async def admit(
        self, job: str, job_max_queue: int | None, adding: int = 1, writing: int = 0
    ) -> Hold:
        """Every way runs are made is admitted here: a submit, a batch, a schedule's fire.
        The caller releases the hold once its insert is over (admission_holds.py)."""
        return await self.admission.admit(job, job_max_queue, adding, writing)

    async def wait(
        self, run: Run, seconds: float, gone: Coroutine[Any, Any, object] | None = None,
        *, replayed: bool = False,
    ) -> Run:  # fmt: skip
        """`run` (as submit just gave it) once it has ended, or as it is after `seconds` or
        once `gone` is done (the caller left; the run is never cancelled). Its end, published
        here, is the run as stored: no re-read. A `replayed` run (an idempotent replay's),
        read before the wait was in place, is read again once it is (an end in between)."""
        if run.state.terminal or seconds <= 0:
            if gone is not None:
                gone.close()
            return run
        again = partial(self.get, run.id) if replayed else None
        ended = await self.waiters.wait_for_end(run.id, seconds, gone, again)
        return ended if ended is not None else await self.get(run.id)

    async def get(self, run_id: str) -> Run:
        run = await self.store.get_run(run_id)
        if run is None:
            raise NotFoundError(f"run {run_id!r} does not exist")
        return run

    async def get_current(self, run_id: str) -> Run:
        """The run, with the progress of a running attempt read up to now."""
        run = await self.get(run_id)
        if run.state is RunState.RUNNING and self.progress_refresher is not None:
            try:
                await self.progress_refresher(run.id, run.attempt)
            except (StorageFullError, StorageIOError):
                return run  # progress cannot be saved now: a read still answers (readiness says)
            run = await self.get(run_id)
        return run

    async def attempts(self, run_id: str) -> list[Attempt]:
        return await self.store.get_attempts(run_id)

    async def list(self, flt: RunFilter) -> Page:
        return await self.store.list_runs(flt)

    async def cancel(self, run_id: str) -> Run:
        """A queued run cancelled at once, a running one flagged and its attempt stopped; one
        that ended is a 409, also when it ended while this was being asked. Each write is
        conditional on the state read: one refused means the run moved on meanwhile (started,
        ended, queued for a retry), and it is read again (answered as read, a run that ended
        between the read and the flag was a 202 showing it succeeded)."""
        for _ in range(4):  # each turn needs a transition between its read and its write
            run = await self.get(run_id)
            if run.state.terminal:
                raise ConflictError(
                    f"run {run_id} already ended as {run.state.value}", state=run.state
                )
            if run.state is RunState.QUEUED:
                cancelled = await self.store.cancel_queued(
                    run_id, self.clock.now(), "cancelled on request"
                )
                if cancelled is not None:
                    self.transitions.publish(cancelled, RunState.QUEUED)
                    return cancelled
                continue  # it started meanwhile: cancel the running attempt
            flagged = await self.store.request_cancel(run_id)
            if flagged is not None:
                failpoints.hit("after_cancel_flag")  # flagged, its program not told yet
                await self._attempts.request_cancel(run_id, flagged.attempt)
                return flagged
        raise UnavailableError(f"run {run_id} changed state on every try to cancel it; retry")

    async def delete(self, run_id: str) -> None:
        run = await self.get(run_id)
        if not run.state.terminal:
            raise ConflictError(
                f"run {run_id} is {run.state.value}; only finished runs can be deleted"
            )
        if not await self.removal.delete(run_id):
            # another delete took the record meanwhile (through another member, or at once
            # here): that one answered 204 and released its uploads; this one is a 404
            raise NotFoundError(f"run {run_id!r} does not exist")
        self.announce("deleted", {"id": run_id})
        if self.uploads is not None:  # its uploads expire upload_ttl_s from now, if unused
            try:
                await self.uploads.release(named_uploads(run.params.values()), run_id)
            except OSError as exc:  # the run is gone: the expiry sweep drops its markers
                log.warning("upload_markers_kept", run_id=run_id, error=str(exc))

    async def read_log(
        self, run_id: str, attempt: int | None, offset: int, limit: int
    ) -> tuple[bytes, int, int]:
        """(chunk, offset after it, current size) of an attempt's log (default: the latest),
        whole in memory: for what reads a bounded piece (a chat's answer)."""
        log = await self.open_log(run_id, attempt, offset, limit)
        try:
            data = await asyncio.to_thread(read_all, log)
        finally:
            log.close()
        return data, log.start + len(data), log.size

    async def open_log(self, run_id: str, attempt: int | None, offset: int, limit: int) -> LogRange:
        """A range of an attempt's log (default: the latest) to send piece by piece; the
        caller closes it. A request cancelled meanwhile still closes what was opened."""
        run = await self.get(run_id)
        number = attempt or run.attempt
        if number < 1 or number > run.attempt:
            if attempt is None:
                return LogRange(None, 0, 0, 0, True)  # not started yet: an empty log
            raise NotFoundError(f"run {run_id} has no attempt {number}", field="attempt")
        path = self.executor.paths(run_id).log(number)
        task = asyncio.ensure_future(
            asyncio.to_thread(open_range, path, offset, min(limit, MAX_LOG_CHUNK))
        )
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(close_opened)
            raise
