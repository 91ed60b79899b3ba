"""The Executor protocol's contract (execution/base.py), held by every executor in
tests/executors.py: launch, exit events, cancel and timeout, adoption, run files, leases."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from runyard.execution.base import (
    Executor,
    ExecutorEvents,
    ExecutorUnavailableError,
    Launch,
    LaunchError,
    NotWantedError,
)
from runyard.execution.protocol import ExitRecord, UnreadableExit
from tests.executors import EXECUTORS, ExecutorFactory, Program, Subject

pytestmark = pytest.mark.anyio
WAIT_S = 10.0  # for an end the executor must report: far longer than any program here runs


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Told:
    """What the executor told: ends in order, and how many times it lost its backend."""

    def __init__(self) -> None:
        self.ends: asyncio.Queue[ExitRecord | UnreadableExit] = asyncio.Queue()
        self.lost = 0

    async def exited(self, record: ExitRecord | UnreadableExit) -> None:
        self.ends.put_nowait(record)

    async def gone(self) -> None:
        self.lost += 1

    @property
    def events(self) -> ExecutorEvents:
        return ExecutorEvents(exited=self.exited, lost=self.gone)

    async def next_end(self) -> ExitRecord:
        record = await asyncio.wait_for(self.ends.get(), WAIT_S)
        assert isinstance(record, ExitRecord), record
        return record


@pytest.fixture(params=EXECUTORS, ids=lambda factory: factory.__name__)
async def subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Subject]:
    factory: ExecutorFactory = request.param
    async with factory(tmp_path) as made:
        yield made


@pytest.fixture
async def told(subject: Subject) -> AsyncIterator[Told]:
    told = Told()
    await subject.executor.start(told.events)
    yield told
    await subject.executor.stop()


def launch(subject: Subject, run_id: str, program: Program, **extra: Any) -> Launch:
    return Launch(
        run_id=run_id,
        attempt=extra.pop("attempt", 1),
        command=subject.command(program),
        params=extra.pop("params", {}),
        workspace=extra.pop("workspace", "empty"),
        env={},
        timeout_s=extra.pop("timeout_s", None),
        kill_grace_s=extra.pop("kill_grace_s", 2.0),
        **extra,
    )


async def test_an_attempt_runs_and_its_end_is_told_with_its_exit_code(
    subject: Subject, told: Told
) -> None:
    ex = subject.executor
    started = await ex.launch(launch(subject, "r1", Program(output="hello\n", exit_code=3)))
    assert started is not None
    assert started.pid > 0
    end = await told.next_end()
    assert (end.key, end.exit_code, end.signal, end.killed_by) == ("r1.1", 3, None, None)
    assert end.pid == started.pid
    assert end.ended_at >= started.started_at
    # the record survives in the run files, and the output landed in the attempt's log
    assert await ex.read_exit("r1", 1) == end
    assert ex.paths("r1").log(1).read_text() == "hello\n"


async def test_the_workspace_is_prepared_before_the_program_runs(
    subject: Subject, told: Told
) -> None:
    ex = subject.executor
    await ex.launch(launch(subject, "r2", Program(), params={"greeting": "hi"}))
    await told.next_end()
    paths = ex.paths("r2")
    assert paths.workspace.is_dir()
    assert paths.artifacts_dir.is_dir()
    assert json.loads(paths.params_file.read_text()) == {"greeting": "hi"}


async def test_cancel_ends_it_with_the_signal_and_reason_recorded(
    subject: Subject, told: Told
) -> None:
    ex = subject.executor
    await ex.launch(launch(subject, "r3", Program(output="up\n", until_signalled=True)))
    assert "r3.1" in await ex.running()
    assert await ex.cancel("r3", 1) is True
    end = await told.next_end()
    assert (end.key, end.exit_code, end.signal, end.killed_by) == (
        "r3.1",
        None,
        signal.SIGTERM,
        "cancel",
    )
    assert "r3.1" not in await ex.running()
    assert await ex.cancel("r3", 1) is False  # no longer running: nothing to stop


async def test_a_timeout_ends_it_killed_by_timeout(subject: Subject, told: Told) -> None:
    ex = subject.executor
    await ex.launch(launch(subject, "r4", Program(until_signalled=True), timeout_s=0.3))
    end = await told.next_end()
    assert (end.key, end.signal, end.killed_by) == ("r4.1", signal.SIGTERM, "timeout")


async def test_a_running_attempt_is_listed_and_adopted_after_a_restart(
    subject: Subject, told: Told
) -> None:
    first = subject.executor
    started = await first.launch(launch(subject, "r5", Program(until_signalled=True)))
    assert started is not None
    await first.stop()  # the server goes away; its program does not
    again, told_again = subject.reopen(), Told()
    await again.start(told_again.events)
    try:
        listed = await again.running()
        assert listed["r5.1"].pid == started.pid
        assert not listed["r5.1"].ended
        assert await again.cancel("r5", 1, reason="fenced")
        end = await told_again.next_end()  # told to the executor that adopted it
        assert (end.key, end.killed_by) == ("r5.1", "fenced")
        assert told.ends.empty() and told.lost == 0  # the stopped one hears nothing more
    finally:
        await again.stop()


async def test_its_program_still_runs_until_it_ends(subject: Subject, told: Told) -> None:
    """What recovery asks before it believes an exit file: a record is written only once its
    program has ended, so one found while the program still runs is not its record."""
    ex = subject.executor
    # its own id: with no pid, a program is known by its key machine-wide (other tests
    # running beside this one name theirs "r11" too)
    rid = f"r11x{uuid.uuid4().hex[:12]}"
    started = await ex.launch(launch(subject, rid, Program(until_signalled=True)))
    assert started is not None
    assert await ex.still_runs(rid, 1, started.pid, started.start_time)
    # no start recorded (the server stopped first): told by the attempt alone
    assert await ex.still_runs(rid, 1, None, None)
    assert await ex.cancel(rid, 1)
    assert (await told.next_end()).key == f"{rid}.1"
    assert not await ex.still_runs(rid, 1, started.pid, started.start_time)
    assert not await ex.still_runs(rid, 1, None, None)
    assert not await ex.still_runs("nobody", 1, None, None)


async def test_a_missing_command_ends_the_attempt_with_a_record(
    subject: Subject, told: Told
) -> None:
    ex = subject.executor
    # None when the backend spawns it here and knows at once; a backend that starts programs
    # elsewhere (Slurm) learns it there: the attempt started, its record says it could not
    started = await ex.launch(launch(subject, "r6", Program(missing=True)))
    end = await told.next_end()
    assert (end.key, end.exit_code) == ("r6.1", 127)
    assert end.pid is None if started is None else end.pid == started.pid
    assert end.error is not None
    assert "cannot start" in end.error
    assert await ex.read_exit("r6", 1) == end


async def test_a_refused_spawn_raises_launch_error(subject: Subject, told: Told) -> None:
    ex = subject.executor
    with pytest.raises(LaunchError):  # a workspace that cannot be prepared
        await ex.launch(launch(subject, "r7", Program(), workspace="copy:no-such-directory"))
    await ex.launch(launch(subject, "r8", Program(until_signalled=True)))
    with pytest.raises(LaunchError):  # the same attempt twice
        await ex.launch(launch(subject, "r8", Program(until_signalled=True)))
    await ex.cancel("r8", 1)
    assert (await told.next_end()).key == "r8.1"
    assert told.ends.empty()  # a refused spawn has no end to tell


async def test_an_attempt_no_longer_wanted_once_prepared_is_not_started(
    subject: Subject, told: Told
) -> None:
    """A probe: a cancel that came while a workspace was copied was carried out only once
    the program had been spawned (and had done its first things, seconds after the cancel).
    Asked after the preparation, before the spawn, the attempt starts nothing."""
    ex = subject.executor
    asked: list[str] = []

    def wanted() -> bool:
        asked.append("r9")
        return False

    mark = Program(output="ran\n")
    with pytest.raises(NotWantedError):
        await ex.launch(launch(subject, "r9", mark, still_wanted=wanted))
    assert asked == ["r9"]  # asked once
    assert await ex.read_exit("r9", 1) is None
    log = ex.paths("r9").log(1)
    assert not log.exists() or log.read_text() == ""  # nothing ran
    await asyncio.sleep(0)
    assert told.ends.empty()  # nothing to tell
    started = await ex.launch(launch(subject, "r10", mark, still_wanted=lambda: True))
    assert started is not None
    assert (await told.next_end()).key == "r10.1"


async def test_health_while_connected_and_after_stop(subject: Subject, told: Told) -> None:
    ex: Executor = subject.executor
    assert ex.healthy
    assert (await ex.health(5.0)).write_errors == {}
    await ex.stop()
    assert not ex.healthy
    with pytest.raises(ExecutorUnavailableError):
        await ex.health(1.0)
    with pytest.raises(ExecutorUnavailableError):
        await ex.running()
    assert await ex.cancel("nobody", 1) is False
    assert told.lost == 0  # stopping is not losing the backend


async def test_a_lapsed_lease_fences_its_programs(subject: Subject, told: Told) -> None:
    ex = subject.executor
    await ex.hold_lease("lease-a", time.time() + 1.0, 0.5, 5.0)  # and never renewed
    await ex.launch(launch(subject, "r10", Program(until_signalled=True)))
    end = await told.next_end()
    assert (end.key, end.signal, end.killed_by) == ("r10.1", signal.SIGTERM, "fenced")
