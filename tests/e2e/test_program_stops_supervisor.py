"""A program that stops its supervisor (it is the program's parent, of the same user) holds
no other run (a probe: `kill -STOP $PPID` froze every run: no timeout fired, cancels and
spawns timed out, until someone sent SIGCONT by hand). The server's readiness check finds it
stopped and, after `RUNYARD_SUPERVISOR_STOPPED_GRACE_S` (30 s by default: a stop made on
purpose is left alone that long; GRACE here), continues it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runyard.models import RunState
from tests import web
from tests.support import wait_for

pytestmark = pytest.mark.e2e

GRACE = {"RUNYARD_SUPERVISOR_STOPPED_GRACE_S": "3"}


@pytest.mark.timeout(180)
def test_a_supervisor_stopped_by_a_program_is_continued(
    start_server, write_job, jobs_dir: Path
) -> None:
    write_job("slow", 'command = ["sleep", "600"]\ntimeout_s = 2\nkill_grace_s = 1\n')
    # once its start is told (stopped before its spawn's answer, the server gives the spawn up)
    write_job("stopper", 'command = ["sh", "-c", "sleep 1; kill -STOP $PPID; echo stopped it"]\n')
    server = start_server(jobs_dir, env=GRACE)
    slow = web.post(f"{server.url}/v1/runs", json={"job": "slow"}).json()["id"]
    wait_for(lambda: web.get(f"{server.url}/v1/runs/{slow}").json()["state"] == "running",
             what="the slow run to start")  # fmt: skip
    stopper = web.post(f"{server.url}/v1/runs", json={"job": "stopper"}).json()["id"]
    # its timeout fires once the supervisor runs again, and the stopper's end is recorded
    wait_for(lambda: web.get(f"{server.url}/v1/runs/{slow}").json()["state"] == "timed_out",
             timeout=120, what="the slow run's timeout")  # fmt: skip
    wait_for(lambda: web.get(f"{server.url}/v1/runs/{stopper}").json()["state"] == "succeeded",
             timeout=120, what="the stopper to end")  # fmt: skip
    assert "supervisor_continued" in server.log_path.read_text()
    wait_for(lambda: web.get(f"{server.url}/health/ready").status_code == 200, what="ready")


@pytest.mark.timeout(180)
def test_a_spawn_answered_late_is_stopped_before_its_run_is_retried(
    start_server, write_job, jobs_dir: Path, tmp_path: Path
) -> None:
    """The supervisor stops between a spawn and its answer (a failpoint: as a stop by any
    process of its user would). The server gives the spawn up after its timeout and the run
    goes back to the queue, but its program ran on untracked: the retry started beside it
    (two live attempts of one run). Now the late answer is still awaited, its program is
    stopped, and no other attempt of the run starts before it has ended."""
    ran = tmp_path / "ran"
    script = (
        f'trap "echo stop $RUNYARD_ATTEMPT >> {ran}; exit 143" TERM; '
        f"echo start $RUNYARD_ATTEMPT >> {ran}; "
        f'if [ "$RUNYARD_ATTEMPT" = 1 ]; then sleep 60 & wait; fi; '
        f"echo end $RUNYARD_ATTEMPT >> {ran}"
    )
    write_job("late", f"command = {json.dumps(['sh', '-c', script])}\n")
    # the spawn given up (2 s) before the stopped supervisor is continued (5 s)
    late = {"RUNYARD_SUPERVISOR_TIMEOUT_S": "2", "RUNYARD_SUPERVISOR_STOPPED_GRACE_S": "5"}
    server = start_server(jobs_dir, env={"RUNYARD_FAILPOINTS": "before_spawn_answer", **late})
    with server.client() as c:
        run_id = web.post(f"{server.url}/v1/runs", json={"job": "late"}).json()["id"]
        done = server.wait_run(c, run_id, timeout=120)
        assert done.state is RunState.SUCCEEDED, done.reason
        last = done.attempt
    assert last is not None and last > 1
    assert ran.read_text().splitlines() == ["start 1", "stop 1", f"start {last}", f"end {last}"]
    log = server.log_path.read_text()
    assert "late_spawn_stopped" in log
    assert "supervisor_continued" in log


@pytest.mark.timeout(120)
def test_a_program_that_kills_its_supervisor_as_it_starts_spends_its_attempt(
    start_server, write_job, jobs_dir: Path, tmp_path: Path
) -> None:
    """A probe: a program that killed its supervisor before the spawn was answered was taken
    for never started and run again, free (5 of 14 runs ran their program two or three times
    with `max_attempts = 1`), and each time it took every other run on the host with it. The
    supervisor stops between the spawn and its answer (a failpoint), so that the kill always
    comes first: the attempt is lost, spent, and nothing runs it again."""
    ran = tmp_path / "ran"
    write_job(
        "killer",
        f"command = {json.dumps(['sh', '-c', f'echo ran >> {ran}; kill -9 $PPID; exit 3'])}\n"
        "max_attempts = 1\n",
    )
    server = start_server(jobs_dir, env={"RUNYARD_FAILPOINTS": "before_spawn_answer"})
    with server.client() as c:
        run_id = web.post(f"{server.url}/v1/runs", json={"job": "killer"}).json()["id"]
        done = server.wait_run(c, run_id, timeout=60)
        assert done.state is RunState.FAILED, done
        assert done.attempt == 1
        assert "went away as it started it" in (done.reason or ""), done.reason
    assert ran.read_text() == "ran\n"
