"""The attempts owner: an end is written once, under this server's lease; it gives back the
slot, publishes one transition and wakes the dispatcher; a fenced end only frees the slot."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from runyard.clock import SystemClock
from runyard.models import Attempt, AttemptEnd, AttemptState, Claim, Run, RunState
from runyard.services import outcomes
from runyard.services.attempts import Attempts
from runyard.services.lease import Lease
from runyard.services.slots import Slots
from runyard.services.transitions import Transitions
from runyard.services.wakeup import QueueWakeup, Wakeup


class FakeStore:
    """Records end writes; `fenced` makes the store refuse them (another server decided)."""

    def __init__(self, *, fenced: bool = False) -> None:
        self.fenced = fenced
        self.ends: list[tuple[str, int, str | None]] = []

    async def end_attempt(
        self,
        run_id: str,
        number: int,
        end: AttemptEnd,
        *,
        token: str | None,
        by: str | None = None,
    ) -> Run | None:
        self.ends.append((run_id, number, token))
        return None if self.fenced else replace(RUNNING, state=end.run_state)


class Watcher:
    def __init__(self) -> None:
        self.ending: list[tuple[str, int]] = []

    async def track(self, run_id: str, attempt: int, fresh: bool) -> None:
        pass

    async def attempt_ending(self, run_id: str, attempt: int, progress_bytes: int | None) -> None:
        self.ending.append((run_id, attempt))


RUNNING = Run(id="r1", job="j", params={}, state=RunState.RUNNING, priority=0, created_at=0.0,
              attempt=1, spec={"command": ["true"]})  # fmt: skip


def owner(store: FakeStore) -> tuple[Attempts, Slots, list[tuple[RunState, RunState]], QueueWakeup]:
    told: list[tuple[RunState, RunState]] = []
    slots, queue, lease = Slots(capacity=2), QueueWakeup(), Lease()
    lease.hold("tok", 0.0)
    transitions = Transitions([lambda run, previous: told.append((previous, run.state))])
    executor: Any = None  # never reached: nothing here cancels or launches
    attempts = Attempts(
        store, executor, slots, transitions, Watcher(), queue, lease, SystemClock(),  # type: ignore[arg-type]
        host="h",
    )  # fmt: skip
    claim = Claim(RUNNING, Attempt("r1", 1, AttemptState.STARTING, 0.0, "h"))
    attempts.claimed(claim)
    queue.clear()
    return attempts, slots, told, queue


def test_an_end_is_written_under_the_lease_frees_the_slot_and_is_published_once() -> None:
    async def scenario() -> None:
        store = FakeStore()
        attempts, slots, told, queue = owner(store)
        assert slots.active == 1 and attempts.launched("r1", 1)
        await attempts.end(RUNNING, 1, outcomes.not_started(0.0, "test"))
        assert store.ends == [("r1", 1, "tok")]
        assert slots.active == 0 and not attempts.launched("r1", 1)
        assert told == [(RunState.QUEUED, RunState.RUNNING), (RunState.RUNNING, RunState.QUEUED)]
        assert queue.is_set()

    asyncio.run(scenario())


def test_a_fenced_end_frees_the_slot_without_a_transition() -> None:
    async def scenario() -> None:
        attempts, slots, told, queue = owner(FakeStore(fenced=True))
        await attempts.end(RUNNING, 1, outcomes.not_started(0.0, "test"))
        assert slots.active == 0
        assert told == [(RunState.QUEUED, RunState.RUNNING)]  # the claim only
        assert queue.is_set()

    asyncio.run(scenario())


def test_a_lapsed_cluster_lease_holds_claims_until_renewed_and_then_wakes_the_queue() -> None:
    """Back from a pause past its lease, a server claimed before membership noticed: its
    supervisor refused the spawn and the run carried an extra attempt that never ran."""
    queue = Wakeup()
    lease = Lease(renewed=queue)
    assert lease.lapsed(0.0)  # never held (a server that could not join): nothing is claimed
    lease.hold("tok", 100.0, until=115.0)
    assert queue.is_set()  # held at last: claims may begin
    queue.clear()
    assert not lease.lapsed(114.9)
    assert lease.lapsed(115.0)
    assert not queue.is_set()
    lease.hold("tok2", 130.0, until=145.0)  # rejoined: claims may go on, and are woken
    assert queue.is_set()
    assert (lease.token, lease.lapsed(131.0)) == ("tok2", False)
    single = Lease(renewed=Wakeup())
    single.hold("tok", 0.0)  # one server: no end is enforced here
    assert not single.lapsed(1e12)


def test_an_end_wakes_the_dispatcher_unless_its_last_claim_found_the_queue_dry() -> None:
    async def scenario() -> None:
        attempts, _, _, queue = owner(FakeStore())
        queue.drained(queue.generation)  # the claim of this generation took all there was
        done = AttemptEnd(AttemptState.EXITED, 1.0, RunState.SUCCEEDED, "exited", "success", 0)
        await attempts.end(RUNNING, 1, done)
        assert not queue.is_set()  # a freed slot could take nothing
        queue.set()  # a submit since: the freed slot may be wanted
        queue.clear()
        attempts.claimed(Claim(RUNNING, Attempt("r1", 1, AttemptState.STARTING, 0.0, "h")))
        await attempts.end(RUNNING, 1, done)
        assert queue.is_set()
        queue.clear()
        queue.drained(queue.generation)
        attempts.claimed(Claim(RUNNING, Attempt("r1", 1, AttemptState.STARTING, 0.0, "h")))
        await attempts.end(RUNNING, 1, outcomes.not_started(0.0, "test"))
        assert queue.is_set()  # re-queued: a run to claim, however dry the queue was

    asyncio.run(scenario())


def test_an_end_that_would_queue_a_run_whose_cancel_was_accepted_cancels_it() -> None:
    """A cancel answered 202 while its attempt was lost (its server paused past its lease) was
    forgotten: the retry ran the program again in full, and its end was recorded as the
    cancel. A lost or not-started attempt of such a run now ends it cancelled."""

    async def scenario() -> None:
        store = FakeStore()
        written: list[AttemptEnd] = []
        real = store.end_attempt

        async def end_attempt(run_id: str, number: int, end: AttemptEnd, **kw: Any) -> Run | None:
            written.append(end)
            return await real(run_id, number, end, **kw)

        store.end_attempt = end_attempt  # type: ignore[method-assign]
        attempts, _, told, _ = owner(store)
        asked = replace(RUNNING, cancel_requested=True)
        lost = AttemptEnd(
            attempt_state=AttemptState.LOST, ended_at=5.0, run_state=RunState.QUEUED,
            reason="lost: its server went; retrying", outcome="lost", not_before=6.0,
        )  # fmt: skip
        await attempts.end(asked, 1, lost)
        (end,) = written
        assert (end.run_state, end.not_before) == (RunState.CANCELLED, None)
        assert end.reason is not None and end.reason.startswith("cancelled on request (lost:")
        assert told[-1] == (RunState.RUNNING, RunState.CANCELLED)
        plain = outcomes.not_started(0.0, "test")  # no cancel asked: re-queued as ever
        assert plain.honouring_cancel(False) is plain
        # what it would have been says nothing of a retry that will not come (a probe)
        retried = replace(lost, reason="lost: its server went; retrying in 0.2s (attempt 2 of 5)")
        assert (
            retried.honouring_cancel(True).reason == "cancelled on request (lost: its server went)"
        )

    asyncio.run(scenario())
