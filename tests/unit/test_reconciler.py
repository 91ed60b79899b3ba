"""Reconcile passes: a failed one is reported (for readiness) and retried until one succeeds,
at once when poked, with backoff otherwise; one run's failure never stops the others."""

from __future__ import annotations

import asyncio
import errno
from typing import Any

from runyard.models import Attempt, AttemptState
from runyard.services.lease import Lease
from runyard.services.recovery import Reconciler


class FakeExecutor:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.during: list[Any] = []  # what happens while a pass runs, one per pass

    async def running(self) -> dict[str, Any]:
        if self.during:
            self.during.pop(0)()
        if self.failures:
            self.failures -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return {}

    async def read_exit(self, run_id: str, number: int) -> None:
        return None

    async def still_runs(self, run_id: str, number: int, pid: Any, start_time: Any) -> bool:
        return False


class FakeStore:
    def __init__(self, attempts: list[Attempt]) -> None:
        self.attempts = attempts

    async def active_attempts(self, host: str | None = None) -> list[Attempt]:
        return self.attempts

    async def get_run(self, run_id: str) -> None:
        if run_id == "bad":
            raise RuntimeError("database or disk is full")
        # any other run was deleted meanwhile: nothing to settle


class FakeAttempts:
    host = "h"

    def __init__(self, failures: int = 0, attempts: list[Attempt] | None = None) -> None:
        self.executor = FakeExecutor(failures)
        self.store = FakeStore(attempts or [])
        self.unrecorded: dict[str, object] = {}
        self.lease = Lease()  # one server's: nothing inherited to wait for

    def launched(self, run_id: str, number: int) -> bool:
        return False

    async def starts_written(self) -> None:
        pass  # none in flight: nothing here starts a program


def attempt(run_id: str) -> Attempt:
    return Attempt(run_id=run_id, number=1, state=AttemptState.RUNNING, created_at=0, host="h")


def test_a_failed_pass_is_reported_and_retried_with_backoff_until_it_succeeds() -> None:
    async def scenario() -> None:
        reconciler = Reconciler(FakeAttempts(failures=3), retry_base_s=0.01, min_gap_s=0)  # type: ignore[arg-type]
        state = await reconciler.run()
        assert not state.ok
        assert state.error is not None and "No space left on device" in state.error
        assert state.at > 0
        assert reconciler._retry is not None
        await asyncio.wait_for(reconciler._retry, 10)  # ends once a pass succeeded
        assert reconciler.state.ok and reconciler.state.error is None
        assert reconciler.passes == 4
        await reconciler.stop()

    asyncio.run(scenario())


def test_a_poke_retries_at_once_instead_of_waiting_out_the_backoff() -> None:
    async def scenario() -> None:
        reconciler = Reconciler(
            FakeAttempts(failures=1),  # type: ignore[arg-type]
            retry_base_s=3600, min_gap_s=0,
        )  # fmt: skip
        assert not (await reconciler.run()).ok
        await asyncio.sleep(0)  # the retry loop starts waiting
        reconciler.poke()
        assert reconciler._retry is not None
        await asyncio.wait_for(reconciler._retry, 10)
        assert reconciler.state.ok
        await reconciler.stop()

    asyncio.run(scenario())


def test_a_poke_while_a_retry_fails_asks_for_the_next_at_once() -> None:
    async def scenario() -> None:
        attempts = FakeAttempts(failures=2)
        reconciler = Reconciler(attempts, retry_base_s=3600, min_gap_s=0)  # type: ignore[arg-type]
        # the first pass fails; the second (poked) fails too, with a transition (a poke)
        # while it runs: the third comes at once, not after the hour's backoff
        attempts.executor.during = [lambda: None, reconciler.poke]
        assert not (await reconciler.run()).ok
        await asyncio.sleep(0)  # the retry loop starts waiting
        reconciler.poke()
        assert reconciler._retry is not None
        await asyncio.wait_for(reconciler._retry, 10)
        assert reconciler.state.ok and reconciler.passes == 3
        await reconciler.stop()

    asyncio.run(scenario())


def test_one_runs_failure_is_counted_and_the_others_go_on() -> None:
    async def scenario() -> None:
        attempts = FakeAttempts(attempts=[attempt("bad"), attempt("gone")])
        reconciler = Reconciler(attempts, retry_base_s=3600)  # type: ignore[arg-type]
        state = await reconciler.run()
        assert (state.ok, state.failed) == (False, 1)
        assert state.error == "reconcile failed: run bad: RuntimeError: database or disk is full"
        assert reconciler._retry is not None and not reconciler._retry.done()  # retried
        await reconciler.stop()

    asyncio.run(scenario())


def test_needed_marks_not_ok_until_a_pass_settles_it() -> None:
    async def scenario() -> None:
        reconciler = Reconciler(FakeAttempts(), retry_base_s=0.01, min_gap_s=0)  # type: ignore[arg-type]
        assert (await reconciler.run()).ok
        reconciler.needed("the end of attempt r.1 was not recorded (disk full)")
        assert not reconciler.state.ok
        assert reconciler.state.error == "the end of attempt r.1 was not recorded (disk full)"
        assert reconciler._retry is not None
        await asyncio.wait_for(reconciler._retry, 10)
        assert reconciler.state.ok
        await reconciler.stop()

    asyncio.run(scenario())


def test_an_end_the_supervisor_told_is_not_doubted_for_what_carries_its_key() -> None:
    """An end told by the supervisor whose write failed (kept in `unrecorded`) is its own
    word, no file a program could write: an attempt without a start record (its end heard in
    the turn its start was) is finalised with it, though a descendant not swept yet still
    carries the attempt's key. It was taken for a program running on, and the run lost."""
    import time

    from runyard.execution.protocol import ExitRecord
    from runyard.services.recovery import _settle

    class Settling(FakeAttempts):
        def __init__(self) -> None:
            super().__init__()
            self.ended: list[object] = []
            self.clock = type("Clock", (), {"now": staticmethod(time.time)})()

            async def still_runs(*_: Any) -> bool:
                return True  # something carrying its key runs

            async def kill_leftovers(*_: Any) -> int:
                return 0

            self.executor.still_runs = still_runs  # type: ignore[method-assign]
            self.executor.kill_leftovers = kill_leftovers  # type: ignore[attr-defined]

        async def exited(self, record: object) -> None:
            self.ended.append(record)

    told = ExitRecord(key="r.1", pid=None, exit_code=0, signal=None, killed_by=None,
                      started_at=None, ended_at=time.time())  # fmt: skip
    attempts = Settling()
    attempts.unrecorded["r.1"] = told
    pending = Attempt(run_id="r", number=1, state=AttemptState.STARTING, created_at=0, host="h")
    outcome = asyncio.run(_settle(attempts, pending, set(), skip_own=False))  # type: ignore[arg-type]
    assert outcome == "finalised"
    assert attempts.ended == [told]
