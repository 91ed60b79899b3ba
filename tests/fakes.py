"""Test doubles for the in-process layer: a clock the test moves, and an executor that runs no
program (the test decides when and how each attempt ends)."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from runyard.execution.base import (
    ExecutorEvents,
    ExecutorHealth,
    ExecutorUnavailableError,
    Launch,
    RunningAttempt,
    Started,
)
from runyard.execution.layout import RunPaths
from runyard.execution.protocol import ExitRecord, UnreadableExit
from runyard.fstree import remove_tree
from runyard.models import attempt_key


class FakeClock:
    """Wall-clock time that moves only when the test says so (starts at the real time, so the
    few places that read the real clock agree with it)."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


@dataclass
class FakeAttempt:
    launch: Launch
    started: Started
    ended: bool = False


class FakeExecutor:
    """Implements the Executor protocol without processes: `launch` records the attempt and
    says it started; `finish` (or `cancel`) ends it, telling `events.exited` as the
    supervisor would and keeping the exit record for `read_exit`. Its run files are real
    (an empty log per attempt) so streams and artifacts read them as usual."""

    def __init__(self, data_dir: Path, clock: FakeClock | None = None) -> None:
        self.data_dir = data_dir
        self.clock = clock or FakeClock()
        self.launches: list[Launch] = []  # every launch, in order
        self.attempts: dict[str, FakeAttempt] = {}
        self.exits: dict[str, ExitRecord] = {}
        self.cancels: list[tuple[str, int, str]] = []
        self.leases: list[tuple[str, float]] = []
        self.launched = asyncio.Event()  # set on every launch, for a test waiting for one
        self._events: ExecutorEvents | None = None
        self._pids = itertools.count(10_000)
        self._tasks: set[asyncio.Task[None]] = set()
        self.connected = False

    # -- the protocol --

    @property
    def healthy(self) -> bool:
        return self.connected

    async def start(self, events: ExecutorEvents) -> None:
        self._events = events
        self.connected = True

    async def reconnect(self) -> None:
        self.connected = True

    async def stop(self) -> None:
        for task in list(self._tasks):
            await task
        self.connected = False

    async def health(self, timeout_s: float) -> ExecutorHealth:
        if not self.connected:
            raise ExecutorUnavailableError("the fake executor is stopped")
        return ExecutorHealth()

    async def hold_lease(self, token: str, until: float, grace_s: float, timeout_s: float) -> None:
        self.leases.append((token, until))

    def paths(self, run_id: str) -> RunPaths:
        return RunPaths.of(self.data_dir, run_id)

    async def launch(self, spec: Launch) -> Started | None:
        if not self.connected:
            raise ExecutorUnavailableError("the fake executor is stopped")
        paths = self.paths(spec.run_id)
        paths.workspace.mkdir(parents=True, exist_ok=True)
        paths.log(spec.attempt).touch()
        now = self.clock.now()
        started = Started(pid=next(self._pids), pgid=0, start_time=now, started_at=now)
        self.attempts[attempt_key(spec.run_id, spec.attempt)] = FakeAttempt(spec, started)
        self.launches.append(spec)
        self.launched.set()
        return started

    async def cancel(self, run_id: str, attempt: int, reason: str = "cancel") -> bool:
        held = self.attempts.get(attempt_key(run_id, attempt))
        if held is None or held.ended:
            return False
        self.cancels.append((run_id, attempt, reason))
        # like the supervisor: the answer first, the end (SIGTERM honoured) reported after it
        task = asyncio.create_task(
            self.finish(run_id, attempt, sig=signal.SIGTERM, killed_by=reason)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def running(self) -> dict[str, RunningAttempt]:
        return {
            key: RunningAttempt(
                key=key,
                pid=held.started.pid,
                start_time=held.started.start_time,
                started_at=held.started.started_at,
            )
            for key, held in self.attempts.items()
            if not held.ended
        }

    async def read_exit(self, run_id: str, attempt: int) -> ExitRecord | UnreadableExit | None:
        return self.exits.get(attempt_key(run_id, attempt))

    async def kill_leftovers(
        self, run_id: str, attempt: int, pid: int | None, start_time: float | None
    ) -> int:
        return 0

    async def remove_files(self, run_id: str) -> None:
        await asyncio.to_thread(remove_tree, self.paths(run_id).root)

    # -- the test's side --

    def running_keys(self) -> list[str]:
        """Attempts started and not ended, in launch order."""
        return [k for k, held in self.attempts.items() if not held.ended]

    async def finish(
        self,
        run_id: str,
        attempt: int,
        exit_code: int | None = 0,
        *,
        sig: int | None = None,
        killed_by: str | None = None,
        output: str = "",
    ) -> None:
        """End an attempt as its program would: its output appended to its log, its exit
        record kept, then the attempts owner told (awaited, like the supervisor's event)."""
        key = attempt_key(run_id, attempt)
        held = self.attempts[key]
        if held.ended:
            return
        held.ended = True
        if output:
            with self.paths(run_id).log(attempt).open("a") as log:
                log.write(output)
        record = ExitRecord(
            key=key,
            pid=held.started.pid,
            exit_code=None if sig is not None else exit_code,
            signal=int(sig) if sig is not None else None,
            killed_by=killed_by,
            started_at=held.started.started_at,
            ended_at=self.clock.now(),
        )
        self.exits[key] = record
        assert self._events is not None, "finish before start"
        await self._events.exited(record)
