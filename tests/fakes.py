"""Test doubles for the in-process layer: a clock the test moves, and an executor that runs no
program (the test decides when and how each attempt ends, or a command says it)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import signal
import time
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runyard.clock import Clock
from runyard.execution.base import (
    ExecutorEvents,
    ExecutorHealth,
    ExecutorUnavailableError,
    Launch,
    LaunchError,
    RunningAttempt,
    Started,
    check_wanted,
)
from runyard.execution.layout import RunPaths
from runyard.execution.protocol import ExitRecord, UnreadableExit
from runyard.models import attempt_key

ACTED = "runyard-fake-program"  # a command the fake executor acts out instead of waiting


class FakeClock:
    """Wall-clock time that moves only when the test says so (starts at the real time, so the
    few places that read the real clock agree with it)."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


def acted_command(
    output: str = "", exit_code: int = 0, *, until_signalled: bool = False, missing: bool = False
) -> list[str]:
    """A Launch.command the fake executor plays: writes `output` to the log and ends with
    `exit_code` at once, or runs until signalled, or cannot start. (Base64: commands are
    templates, so no `{` may appear.)"""
    script = {"output": output, "exit_code": exit_code, "until_signalled": until_signalled,
              "missing": missing}  # fmt: skip
    return [ACTED, base64.b64encode(json.dumps(script).encode()).decode()]


@dataclass
class FakeAttempt:
    launch: Launch
    started: Started
    lease: str | None = None
    ended: bool = False
    timer: asyncio.TimerHandle | None = None


@dataclass
class FakeBackend:
    """What outlives one FakeExecutor, as the supervisor outlives a server: the attempts, their
    exit records, and which executor is connected (told of ends) now."""

    attempts: dict[str, FakeAttempt] = field(default_factory=dict)
    exits: dict[str, ExitRecord] = field(default_factory=dict)
    front: FakeExecutor | None = None
    lease: tuple[str, float] | None = None
    lease_timer: asyncio.TimerHandle | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    pids: itertools.count[int] = field(default_factory=lambda: itertools.count(10_000))


class FakeExecutor:
    """Implements the Executor protocol without processes: `launch` records the attempt and
    says it started; `finish` (or `cancel`, a timeout, a lapsed lease) ends it, telling the
    connected executor's `events.exited` as the supervisor would and keeping the exit record
    for `read_exit`. Its run files are real (workspace, params, log) so streams and artifacts
    read them as usual. An `acted_command` plays its program out by itself."""

    def __init__(
        self,
        data_dir: Path,
        clock: Clock | None = None,
        *,
        backend: FakeBackend | None = None,
        jobs_dir: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.jobs_dir = jobs_dir
        self.clock = clock or FakeClock()
        self.backend = backend or FakeBackend()
        self.launches: list[Launch] = []  # every launch through this executor, in order
        self.sent: list[str] = []  # the attempts whose launch went out at once (launch_now)
        self.cancels: list[tuple[str, int, str]] = []
        self._events: ExecutorEvents | None = None
        self.connected = False

    @property
    def attempts(self) -> dict[str, FakeAttempt]:
        return self.backend.attempts

    # -- the protocol --

    @property
    def healthy(self) -> bool:
        return self.connected

    async def start(self, events: ExecutorEvents) -> None:
        self._events = events
        await self.reconnect()

    async def reconnect(self) -> None:
        self.connected = True
        self.backend.front = self

    async def stop(self) -> None:
        for task in list(self.backend.tasks):
            await task  # ends already under way are told before stop returns
        self.connected = False
        if self.backend.front is self:
            self.backend.front = None

    async def health(self, timeout_s: float) -> ExecutorHealth:
        self._connected()
        return ExecutorHealth()

    async def hold_lease(self, token: str, until: float, grace_s: float, timeout_s: float) -> None:
        backend = self.backend
        backend.lease = (token, until)
        if backend.lease_timer is not None:
            backend.lease_timer.cancel()
        delay = max(0.0, until - self.clock.now())
        backend.lease_timer = asyncio.get_running_loop().call_later(delay, self._lease_lapsed)

    def paths(self, run_id: str) -> RunPaths:
        return RunPaths.of(self.data_dir, run_id)

    def launch_now(self, spec: Launch) -> Awaitable[Started | None]:
        """As the supervisor's executor: the request goes out now (`sent`, in order), its
        outcome comes when awaited."""
        self.sent.append(attempt_key(spec.run_id, spec.attempt))
        return self.launch(spec)

    async def launch(self, spec: Launch) -> Started | None:
        self._connected()
        key = attempt_key(spec.run_id, spec.attempt)
        if key in self.attempts:
            raise LaunchError(f"attempt {key} was started already")
        script = _script(spec.command)
        await asyncio.to_thread(self._prepare, spec)
        check_wanted(spec)  # as every executor: a cancel while it was prepared starts nothing
        now = self.clock.now()
        if script.get("missing"):
            record = ExitRecord(key=key, pid=None, exit_code=127, signal=None, killed_by=None,
                                started_at=None, ended_at=now,
                                error=f"cannot start {spec.command[0]}: no such file")  # fmt: skip
            self._later(self._tell(record))
            return None
        started = Started(pid=next(self.backend.pids), pgid=0, start_time=now, started_at=now)
        lease = self.backend.lease[0] if self.backend.lease else None
        held = FakeAttempt(spec, started, lease)
        self.attempts[key] = held
        self.launches.append(spec)
        if script.get("output"):
            with self.paths(spec.run_id).log(spec.attempt).open("a") as log:
                log.write(script["output"])
        if script and not script.get("until_signalled"):
            self._later(self.finish(spec.run_id, spec.attempt, script.get("exit_code", 0)))
        elif spec.timeout_s is not None:
            held.timer = asyncio.get_running_loop().call_later(
                spec.timeout_s, self._timed_out, spec.run_id, spec.attempt
            )
        return started

    async def cancel(self, run_id: str, attempt: int, reason: str = "cancel") -> bool:
        held = self.attempts.get(attempt_key(run_id, attempt))
        if not self.connected or held is None or held.ended:
            return False
        self.cancels.append((run_id, attempt, reason))
        # like the supervisor: the answer first, the end (SIGTERM honoured) told after it
        self._later(self.finish(run_id, attempt, sig=signal.SIGTERM, killed_by=reason))
        return True

    async def running(self) -> dict[str, RunningAttempt]:
        self._connected()
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
        return self.backend.exits.get(attempt_key(run_id, attempt))

    async def still_runs(
        self, run_id: str, attempt: int, pid: int | None, start_time: float | None
    ) -> bool:
        held = self.attempts.get(attempt_key(run_id, attempt))
        return (
            held is not None and not held.ended
            and (pid is None or (held.started.pid, held.started.start_time) == (pid, start_time))
        )  # fmt: skip

    async def kill_leftovers(
        self, run_id: str, attempt: int, pid: int | None, start_time: float | None
    ) -> int:
        return 0

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
        record kept, then the connected executor told (awaited, like the supervisor's event)."""
        key = attempt_key(run_id, attempt)
        held = self.attempts[key]
        if held.ended:
            return
        held.ended = True
        if held.timer is not None:
            held.timer.cancel()
        if output:
            with self.paths(run_id).log(attempt).open("a") as log:
                log.write(output)
        await self._tell(ExitRecord(
            key=key, pid=held.started.pid, exit_code=None if sig is not None else exit_code,
            signal=int(sig) if sig is not None else None, killed_by=killed_by,
            started_at=held.started.started_at, ended_at=self.clock.now(),
        ))  # fmt: skip

    # -- inside --

    def _connected(self) -> None:
        if not self.connected:
            raise ExecutorUnavailableError("the fake executor is not connected")

    def _prepare(self, spec: Launch) -> None:
        paths = self.paths(spec.run_id)
        if not paths.workspace.exists() and spec.workspace != "empty":
            kind, _, source = spec.workspace.partition(":")
            origin = (self.jobs_dir / source) if self.jobs_dir and kind == "copy" else None
            if origin is None or not origin.is_dir():
                raise LaunchError(f"workspace {spec.workspace!r} cannot be prepared")
            shutil.copytree(origin, paths.workspace)
        paths.artifacts_dir.mkdir(parents=True, exist_ok=True)
        paths.params_file.write_text(json.dumps(spec.params))
        paths.log(spec.attempt).touch()

    async def _tell(self, record: ExitRecord) -> None:
        self.backend.exits[record.key] = record
        front = self.backend.front
        if front is not None and front._events is not None:
            await front._events.exited(record)

    def _later(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.backend.tasks.add(task)
        task.add_done_callback(self.backend.tasks.discard)

    def _timed_out(self, run_id: str, attempt: int) -> None:
        self._later(self.finish(run_id, attempt, sig=signal.SIGTERM, killed_by="timeout"))

    def _lease_lapsed(self) -> None:
        """Self-fencing: the programs spawned under a lease that lapsed unrenewed stop."""
        lease = self.backend.lease
        if lease is None or self.clock.now() < lease[1]:
            return
        for held in list(self.attempts.values()):
            if held.lease == lease[0] and not held.ended:
                run_id, number = held.launch.run_id, held.launch.attempt
                self._later(self.finish(run_id, number, sig=signal.SIGTERM, killed_by="fenced"))


def _script(command: list[str]) -> dict[str, Any]:
    """What an acted command says; empty for any other (the test ends it with `finish`)."""
    if len(command) == 2 and command[0] == ACTED:
        script: dict[str, Any] = json.loads(base64.b64decode(command[1]))
        return script
    return {}
