"""Batches: N iterations or a sweep's cartesian product, validated whole, created whole."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import math
import reprlib
from functools import partial
from typing import Any

from runyard.clock import Clock, new_id
from runyard.errors import ConflictError, InvalidInputError, NotFoundError, RunyardError
from runyard.fastjson import dumps
from runyard.jobs import JobRegistry
from runyard.jobs.params import ParamError
from runyard.jobs.spec import Job
from runyard.models import Batch, RunState
from runyard.services.idempotency import json_numbers
from runyard.services.runs import RunService
from runyard.services.uploads import Seen
from runyard.store import Store

_SHORT = reprlib.Repr()  # Python 3.11's Repr takes no arguments: its limits are attributes
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxdict, _SHORT.maxlist = 3, 60, 60, 8, 8


# a run's row besides its params and spec, its first events and index entries: an upper bound
ROW_BYTES = 1024


def expand(
    base: dict[str, Any], iterations: int | None, sweep: dict[str, list[Any]] | None
) -> list[dict[str, Any]]:
    """Every element's params: `iterations` copies of base, or base with each combination of
    the sweep's values (in the order the sweep lists them)."""
    if iterations is not None and sweep is None:
        return [dict(base) for _ in range(iterations)]
    if sweep is None or iterations is not None:
        raise InvalidInputError("give exactly one of `iterations` and `sweep`", field="iterations")
    names = list(sweep)
    return [
        base | dict(zip(names, combo, strict=True)) for combo in itertools.product(*sweep.values())
    ]


def _validated(
    job: Job,
    base: dict[str, Any],
    iterations: int | None,
    sweep: dict[str, list[Any]] | None,
    *,
    size: int,
    max_bytes: int,
    labels: dict[str, str],
) -> tuple[list[dict[str, Any]], int]:
    """Every element's params, validated before any run is created: on a thread (a sweep of
    thousands is tens of milliseconds of checks, the size bound a serialisation of up to the
    whole body), and `iterations` copies checked once. And what a run stores of them (its
    params as validated, its labels), in bytes."""
    field = "sweep" if sweep else "iterations"
    extra = len(dumps(labels))  # every run stores the batch's labels too
    _check_stored_size(size, _request_size(base, sweep) + extra, max_bytes, field)
    elements = expand(base, 1 if iterations is not None else None, sweep)
    values = []
    for index, element in enumerate(elements):
        try:
            values.append(job.validate_params(element))
        except ParamError as exc:
            # bounded: the offending value may be deep or large (it was just refused)
            shown = _SHORT.repr({k: element[k] for k in (sweep or {})})
            raise InvalidInputError(
                f"batch element {index} {shown}: {exc}; no run was created",
                fields=_where_sent(exc.errors, sweep, index), element=index,
            ) from None  # fmt: skip
    if sweep is not None and elements and (replaced := set(base) & set(sweep)):
        _check_replaced(job, elements[0], {name: base[name] for name in replaced})
    # what is stored, the job's defaults filled in: a request that names no param can store
    # a large default in every run (a probe stored 155 MB from a body of 40 bytes)
    per_run = max(len(dumps(v)) for v in values) + extra
    _check_stored_size(size, per_run, max_bytes, field)
    if iterations is not None:
        return [dict(values[0]) for _ in range(iterations)], per_run
    return values, per_run


def _where_sent(
    errors: list[tuple[str, str]], sweep: dict[str, list[Any]] | None, index: int
) -> list[tuple[str, str]]:
    """An element's errors named where the client sent the value: a swept param's at its
    place in the sweep (`sweep.n.3`, element `index` being the product's, the last param
    varying fastest), any other's in the base (`params.n`)."""
    at: dict[str, int] = {}
    for name in reversed(list(sweep or {})):
        size = len(sweep[name]) if sweep else 1
        at[name], index = index % size, index // size
    named = []
    for loc, message in errors:
        name, _, rest = loc.partition(".")
        if name in at:
            named.append((f"sweep.{name}.{at[name]}" + (f".{rest}" if rest else ""), message))
        else:
            named.append((f"params.{loc}", message))
    return named


def _request_size(base: dict[str, Any], sweep: dict[str, list[Any]] | None) -> int:
    """A run's params as the request gives them, bounded from above (the base's size plus
    each swept param's largest value): checked before a sweep of thousands is validated."""
    return len(dumps(base)) + sum(
        max((len(dumps(v)) for v in values), default=0) for values in (sweep or {}).values()
    )


def _check_stored_size(size: int, per_run: int, limit: int, field: str) -> None:
    """Each run stores its own params and labels: a small request must not store gigabytes."""
    if size * per_run > limit:
        raise InvalidInputError(
            f"the batch would store up to {size} runs of {per_run} bytes of params and "
            f"labels, over max_batch_mb ({limit // 2**20} MiB); no run was created",
            field=field, limit=limit,
        )  # fmt: skip


def _check_replaced(job: Job, element: dict[str, Any], replaced: dict[str, Any]) -> None:
    """A base value the sweep replaces is used by no run, but is stored with the batch's
    request: checked as if it were used, in an element that is valid otherwise."""
    try:
        job.validate_params(element | replaced)
    except ParamError as exc:
        errors = [(loc, msg) for loc, msg in exc.errors if loc.split(".")[0] in replaced]
        if errors:
            raise InvalidInputError(
                f"params, a value the sweep replaces: {ParamError(errors)}; no run was created",
                errors=errors,
            ) from None


def batch_hash(job: str, request: dict[str, Any]) -> str:
    """What a batch was asked for, as a replay under its key must ask it again: the job and
    the request as stored with the batch (params, iterations, sweep, priority, labels), its
    numbers as JSON has them (`1` and `1.0` are one number: a retry by another client, or
    the CLI after the SDK, was a 409 for spelling one so)."""
    asked = json_numbers({"job": job, **request})
    canonical = json.dumps(asked, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class BatchService:
    def __init__(
        self,
        store: Store,
        registry: JobRegistry,
        runs: RunService,
        clock: Clock,
        max_batch: int,
        max_bytes: int = 64 * 2**20,
        *,
        local_store: bool = True,
    ) -> None:
        self.store = store
        self.registry = registry
        self.runs = runs
        self.clock = clock
        self.max_batch = max_batch
        self.max_bytes = max_bytes  # params stored by one batch, all its runs together
        self.local_store = local_store  # the database is in the data directory (SQLite)

    async def create(
        self,
        job_name: str,
        params: dict[str, Any],
        *,
        iterations: int | None,
        sweep: dict[str, list[Any]] | None,
        priority: int | None,
        labels: dict[str, str],
        idempotency_key: str | None = None,
    ) -> tuple[Batch, dict[str, int], bool]:
        """The batch, its runs' counts by state, and whether it was made now: sent again
        under the Idempotency-Key it was made with, the batch that key made is answered."""
        job = await self.registry.get(job_name)
        request = {"params": params, "iterations": iterations, "sweep": sweep,
                   "priority": priority, "labels": labels}  # fmt: skip
        if idempotency_key is not None:
            # a replay is answered before its checks and admission: a queue full since, a
            # sweep of 10,000 to validate again, its job's file removed or broken since (a
            # client retrying was told the job did not exist, a probe), must not stand in
            # its way
            existing = await self.store.get_batch_by_key(idempotency_key)
            if existing is not None:
                default = job.spec.priority if job is not None else None
                return await self._replayed(existing, job_name, request, default)
        if job is None:
            raise NotFoundError(self.registry.undeclared(job_name), field="job")
        size = (
            iterations
            if iterations is not None
            else math.prod(len(v) for v in (sweep or {}).values())
        )
        sized = "sweep" if sweep else "iterations"
        if size > self.max_batch:
            raise InvalidInputError(
                f"the batch would create {size} runs, over max_batch ({self.max_batch})",
                field=sized,
            )
        self._fits_a_queue(job, size, sized)
        values, per_run = await asyncio.to_thread(
            partial(_validated, size=size, max_bytes=self.max_bytes, labels=labels),
            job,
            params,
            iterations,
            sweep,
        )
        if job.spec.has_files:
            seen: Seen = {}  # one upload shared by the batch is read once
            for index, element in enumerate(values):
                try:
                    await self.runs.check_files(job, element, seen)
                except RunyardError as exc:  # named where the client sent it, as above
                    field = exc.extra.get("field")
                    if isinstance(field, str) and field.startswith("params."):
                        where = [(field.removeprefix("params."), "")]
                        exc.extra["field"] = _where_sent(where, sweep, index)[0][0]
                        exc.extra["element"] = index
                    raise
        self.runs.check_accepting()
        # its runs in the database's WAL, then in the database: refused before a byte is
        # written if that would take the reserve (a transaction the disk cuts short leaves its
        # WAL on it, and nothing can be written to checkpoint it back)
        row = per_run + len(dumps(job.snapshot)) + ROW_BYTES
        writing = 2 * size * row if self.local_store else 0
        hold = await self.runs.admit(job_name, job.spec.max_queue, len(values), writing)
        try:  # held from its admission until its insert is over, whatever happens between
            now = self.clock.now()
            batch = Batch(
                id=new_id(), job=job_name, size=len(values), created_at=now, request=request,
                idempotency_key=idempotency_key,
            )  # fmt: skip
            # made off the loop, as they were validated: 10,000 of them held the loop ~0.2 s
            # (a probe: one `/health/live` of 197 ms), on a thread it gets back every 5 ms
            runs = await asyncio.to_thread(
                lambda: [
                    self.runs.new_run(job, v, priority=priority, labels=labels, batch_id=batch.id)
                    for v in values
                ]
            )
            stored, created = await self.runs.stored_with_uploads(
                job, runs, lambda: self.store.insert_batch(batch, runs)
            )
        finally:
            hold.release()
        if not created:  # the key was taken meanwhile, by a request sent at the same time
            await self.runs.unreference(job, runs)
            return await self._replayed(stored, job_name, request, job.spec.priority)
        self.runs.queue.set_claimable()
        self.runs.announce("batch", {"id": batch.id, "job": batch.job, "size": batch.size})
        return batch, {"queued": len(runs)}, True

    def _fits_a_queue(self, job: Job, size: int, where: str) -> None:
        """A batch larger than a max_queue it is admitted against can never be: a 422, not
        a 429 whose Retry-After a client would follow for ever (a probe)."""
        for limit, of in ((job.spec.max_queue, "the job's"), (self.runs.admission.max_queue,
                                                             "the server's")):  # fmt: skip
            if limit is not None and size > limit:
                raise InvalidInputError(
                    f"the batch would create {size} runs, more than {of} max_queue ({limit}) "
                    "lets be queued at once", field=where, limit=limit,
                )  # fmt: skip

    async def _replayed(
        self, batch: Batch, job: str, request: dict[str, Any], default_priority: int | None
    ) -> tuple[Batch, dict[str, int], bool]:
        def compared(asked: dict[str, Any]) -> dict[str, Any]:
            # no priority given is the job's, as given explicitly (`"priority": 0`)
            given = asked.get("priority")
            return {**asked, "priority": default_priority if given is None else given}

        # hashed on a thread: a request of up to max_body_kb serialised twice
        asked, stored = await asyncio.to_thread(
            lambda: (
                batch_hash(job, compared(request)),
                batch_hash(batch.job, compared(batch.request)),
            )
        )
        if asked != stored:
            raise ConflictError(
                "this Idempotency-Key was used for a different batch", batch_id=batch.id
            )
        return batch, await self.store.batch_counts(batch.id), False

    async def get(self, batch_id: str) -> tuple[Batch, dict[str, int]]:
        batch = await self.store.get_batch(batch_id)
        if batch is None:
            raise NotFoundError(f"batch {batch_id!r} does not exist")
        return batch, await self.store.batch_counts(batch_id)

    async def page(
        self, cursor: str | None, limit: int
    ) -> tuple[list[tuple[Batch, dict[str, int]]], str | None]:
        """A page of batches, newest first, with their counts; and the next page's cursor."""
        batches = await self.store.list_batches(cursor, limit + 1)
        more = len(batches) > limit
        page = [(b, await self.store.batch_counts(b.id)) for b in batches[:limit]]
        return page, (page[-1][0].id if more else None)

    async def cancel(self, batch_id: str) -> tuple[Batch, dict[str, int]]:
        """Every run of the batch still queued or running, cancelled. The queued first, all in
        one statement: one by one (a few ms each), the dispatcher claimed and ran most of a
        batch of short runs behind the cancel (a probe: 1,533 of 2,000 succeeded), and 500 to
        a transaction a few at each transaction's boundary (more on PostgreSQL, whose claims
        skip the rows the cancel holds). Then the running, each flagged (the store ends its
        retry cancelled) and stopped. Looked for again until nothing new is found, the queue
        last: a run that went from running back to queued (a retry) between the first two
        lists was in neither."""
        await self.get(batch_id)
        done: set[str] = set()
        while True:
            await self._cancel_queued(batch_id)
            running = [
                run_id
                for run_id in await self.store.batch_run_ids(batch_id, RunState.RUNNING)
                if run_id not in done
            ]
            for run_id in running:
                done.add(run_id)
                with contextlib.suppress(ConflictError):  # it ended meanwhile
                    await self.runs.cancel(run_id)
            if not running and not await self.store.batch_run_ids(batch_id, RunState.QUEUED):
                return await self.get(batch_id)

    async def _cancel_queued(self, batch_id: str) -> None:
        at = self.clock.now()
        for run in await self.store.cancel_queued_of_batch(batch_id, at, "cancelled on request"):
            self.runs.transitions.publish(run, RunState.QUEUED)
