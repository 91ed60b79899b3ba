"""A program's start record (pid, start time): handed to the store as soon as the program
runs, not waited for by what follows, and never missing where recovery reads it. The whole
server in this process on the real SQLite store, its programs the test's (tests/fakes.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog

from runyard.errors import StorageFullError
from runyard.execution.base import Launch, Started
from tests.inprocess import FakedServer, faked
from tests.support import wait_for


@pytest.fixture
def jobs(write_job: Callable[[str, str], Path], jobs_dir: Path) -> Path:
    write_job("hold", 'command = ["hold"]\nretry_on = ["lost"]\nmax_attempts = 2\n')
    return jobs_dir


def attempt_of(srv: FakedServer, run_id: str) -> dict[str, object]:
    found: list[dict[str, object]] = srv.run(run_id)["attempts"]
    return found[0]


def supervisor_lost(srv: FakedServer, run_id: str, state: str) -> dict[str, object]:
    """Its supervisor dies with its programs, telling nothing; the server reconnects and
    reconciles: the run's attempt once it has left `state`."""
    srv.executor.attempts.clear()
    srv.executor.connected = False
    srv.call(srv.runtime.lifecycle._supervisor_lost())
    task = srv.runtime.lifecycle._reconnecting
    assert task is not None
    srv.call(asyncio.wait_for(asyncio.shield(task), 30))
    found: dict[str, object] = wait_for(
        lambda: (a := attempt_of(srv, run_id))["state"] != state and a,
        what="its attempt ended",
    )
    return found


def test_a_running_programs_start_is_recorded(tmp_path: Path, jobs: Path) -> None:
    with faked(tmp_path, jobs) as srv:
        run = srv.submit("hold")
        pid = wait_for(
            lambda: (a := attempt_of(srv, run["id"]))["state"] == "running" and a["pid"],
            what="its start recorded",
        )
        assert pid == srv.executor.attempts[f"{run['id']}.1"].started.pid


def test_a_supervisor_lost_right_after_a_start_leaves_its_attempt_lost_not_unstarted(
    tmp_path: Path, jobs: Path
) -> None:
    """Its supervisor lost as soon as the start was heard: the reconcile pass reads the
    attempt once its start is written, so its program, which ran, is lost (an attempt spent),
    never taken for one that never started (re-queued free)."""
    with faked(tmp_path, jobs) as srv:
        store, attempts = srv.runtime.store, srv.runtime.attempts
        write, waits = store.attempts_started, attempts.starts_written
        asked = asyncio.Event()

        async def held_write(started: list[tuple[str, int, int, int, float, float]]) -> None:
            await asked.wait()  # still in flight when the pass begins
            await write(started)

        async def waited() -> None:
            asked.set()
            await waits()

        store.attempts_started = held_write  # type: ignore[method-assign]
        attempts.starts_written = waited  # type: ignore[method-assign]
        run = srv.submit("hold")
        wait_for(lambda: srv.launched() == [run["id"]], what="the launch")
        assert attempt_of(srv, run["id"])["state"] == "starting"  # its start not written yet
        attempt = supervisor_lost(srv, run["id"], "running")
        assert (attempt["state"], attempt["outcome"]) == ("lost", "lost"), attempt


def test_a_start_the_store_refuses_changes_nothing_of_its_run(tmp_path: Path, jobs: Path) -> None:
    """A full disk at its start record: said in the log, nothing waits for it, and its end,
    written once the disk takes writes again, records the pid and start of its exit."""
    with faked(tmp_path, jobs) as srv:
        store = srv.runtime.store

        async def refused(started: list[tuple[str, int, int, int, float, float]]) -> None:
            raise StorageFullError("no space left on device")

        store.attempts_started = refused  # type: ignore[method-assign]
        with structlog.testing.capture_logs() as logs:
            run = srv.submit("hold")
            wait_for(lambda: srv.launched() == [run["id"]], what="the launch")
            srv.call(asyncio.wait_for(srv.runtime.attempts.starts_written(), 10))
        assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
            "attempt_start_not_written"
        ]
        assert attempt_of(srv, run["id"])["state"] == "starting"
        pid = srv.executor.attempts[f"{run['id']}.1"].started.pid
        srv.finish(run["id"])
        wait_for(lambda: srv.run(run["id"])["state"] == "succeeded", what="its end")
        attempt = attempt_of(srv, run["id"])
        assert (attempt["state"], attempt["pid"]) == ("exited", pid)
        assert attempt["started_at"] is not None


def test_an_end_heard_before_its_start_is_written_with_it_alone(tmp_path: Path, jobs: Path) -> None:
    """A short program's start and end come in one read of the supervisor's connection, the
    end told before the launch hears its start: the end carries the pid and start, and no
    start record is written for it (an update that changed nothing, a store write per run)."""
    with faked(tmp_path, jobs) as srv:
        store, executor = srv.runtime.store, srv.executor
        written: list[list[tuple[str, int, int, int, float, float]]] = []
        write, launch = store.attempts_started, executor.launch

        async def counted(started: list[tuple[str, int, int, int, float, float]]) -> None:
            written.append(started)
            await write(started)

        async def ends_first(spec: Launch) -> Started | None:
            started = await launch(spec)
            await executor.finish(spec.run_id, spec.attempt)  # told as the reply is read
            return started

        store.attempts_started = counted  # type: ignore[method-assign]
        executor.launch = ends_first  # type: ignore[method-assign]
        run = srv.submit("hold")
        wait_for(lambda: srv.run(run["id"])["state"] == "succeeded", what="its end")
        srv.call(asyncio.wait_for(srv.runtime.attempts.starts_written(), 10))
        attempt = attempt_of(srv, run["id"])
        started = executor.attempts[f"{run['id']}.1"].started
        assert (attempt["state"], attempt["pid"]) == ("exited", started.pid)
        assert attempt["started_at"] is not None
        assert written == []


def test_a_program_whose_start_was_not_written_is_lost_when_its_supervisor_is(
    tmp_path: Path, jobs: Path
) -> None:
    """Its start refused (a full disk), then its supervisor lost with no end told: its log
    says it was spawned, so it is lost (an attempt spent), never re-queued as one that never
    started, which ran it again for free."""
    with faked(tmp_path, jobs) as srv:
        store = srv.runtime.store

        async def refused(started: list[tuple[str, int, int, int, float, float]]) -> None:
            raise StorageFullError("no space left on device")

        store.attempts_started = refused  # type: ignore[method-assign]
        run = srv.submit("hold")
        wait_for(lambda: srv.launched() == [run["id"]], what="the launch")
        srv.call(asyncio.wait_for(srv.runtime.attempts.starts_written(), 10))
        assert attempt_of(srv, run["id"])["state"] == "starting"
        attempt = supervisor_lost(srv, run["id"], "starting")
        assert (attempt["state"], attempt["outcome"]) == ("lost", "lost"), attempt
