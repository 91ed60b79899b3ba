"""Cancel and timeout: the run ends as asked and no process of it survives."""

from __future__ import annotations

import pytest

from runyard.models import RunState
from tests.support import processes_of, wait_for

pytestmark = pytest.mark.e2e


def test_cancel_queued_run_ends_at_once_without_starting(start_server) -> None:
    server = start_server(capacity=1)
    with server.client() as c:
        blocker = c.submit("sleeper", {"seconds": 60})
        wait_for(lambda: c.run(blocker.id).state is RunState.RUNNING, what="blocker running")
        queued = c.submit("sleeper", {"seconds": 60})
        assert c.run(queued.id).state is RunState.QUEUED
        cancelled = c.cancel(queued.id)
        assert cancelled.state is RunState.CANCELLED
        assert cancelled.attempt == 0
        assert c.run(queued.id).attempts == []
        c.cancel(blocker.id)
        assert server.wait_run(c, blocker.id).state is RunState.CANCELLED


@pytest.mark.parametrize("job", ["stubborn", "spawner"])
def test_cancel_running_run_leaves_no_process(start_server, job: str) -> None:
    server = start_server()
    with server.client() as c:
        run = c.submit(job)
        wait_for(lambda: c.run(run.id).state is RunState.RUNNING, what="running")
        # sh, plus for the spawner its two sleeps (one of them in a session of its own)
        expected = 1 if job == "stubborn" else 3
        wait_for(lambda: len(processes_of(server.data_dir)) >= expected, what="processes up")
        c.cancel(run.id)
        done = server.wait_run(c, run.id)
        assert done.state is RunState.CANCELLED
        assert done.exit_code is None  # killed by a signal
        # SIGKILLed with the run's end; a loaded machine may take a moment to carry it out
        wait_for(lambda: processes_of(server.data_dir) == [], timeout=10, what="no process")


def test_stubborn_program_needs_sigkill(start_server) -> None:
    server = start_server()
    with server.client() as c:
        run = c.submit("stubborn")
        wait_for(lambda: b"started" in c.logs(run.id)[0], what="program started")
        c.cancel(run.id)
        done = server.wait_run(c, run.id)
        assert "SIGKILL" in (done.reason or "")
        assert b"got TERM, ignoring" in c.logs(run.id)[0]


def test_timeout_ends_run_as_timed_out(start_server, write_job, jobs_dir) -> None:
    write_job("slow", 'command = ["sleep", "60"]\ntimeout_s = 0.5\nkill_grace_s = 0.5\n')
    server = start_server(jobs_dir)
    with server.client() as c:
        done = server.wait_run(c, c.submit("slow").id)
        assert done.state is RunState.TIMED_OUT
        assert "timed out after 0.5s" in (done.reason or "")
        wait_for(lambda: processes_of(server.data_dir) == [], timeout=10, what="no process")


def test_cancel_of_finished_run_is_a_conflict(start_server) -> None:
    from runyard.client import APIError

    server = start_server()
    with server.client() as c:
        run = c.submit("true")
        server.wait_run(c, run.id)
        with pytest.raises(APIError) as info:
            c.cancel(run.id)
        assert info.value.status == 409
        assert "already ended as succeeded" in info.value.detail


def test_a_cancel_while_the_workspace_is_copied_starts_nothing(
    start_server, write_job, jobs_dir, tmp_path
) -> None:
    """A probe: the run reads `running` (its attempt `starting`) while its `copy:` workspace
    is made; a cancel then was answered 202, and the program was spawned once the copy was
    done, seconds later, ran its first commands, and only then got its SIGTERM."""
    tree = jobs_dir / "tree"
    for i in range(60):  # enough files that the copy takes far longer than a cancel's trip
        folder = tree / f"d{i}"
        folder.mkdir(parents=True)
        for j in range(250):
            (folder / f"f{j}").write_bytes(b"x")
    marker = tmp_path / "ran"
    write_job("copied", f'command = ["sh", "-c", "echo ran >> {marker}; sleep 30"]\n'
              'workspace = "copy:tree"\n')  # fmt: skip
    server = start_server(jobs_dir)
    with server.client() as c:
        run = c.submit("copied")
        wait_for(lambda: c.run(run.id).state is RunState.RUNNING, what="claimed")
        assert c.cancel(run.id).cancel_requested
        ended = server.wait_run(c, run.id)
        assert ended.state is RunState.CANCELLED, ended.reason
        assert ended.reason == "cancelled on request (before its program was started)"
        (attempt,) = c.run(run.id).attempts or []
        assert attempt.pid is None and attempt.state == "failed_to_start"
    assert not marker.exists()  # the program never ran
    assert processes_of(server.data_dir) == []
