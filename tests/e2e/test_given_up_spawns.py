"""Spawns the server gave up on (its supervisor stopped, RUNYARD_SUPERVISOR_TIMEOUT_S of 1 s):
what a chaos probe found them still able to do.

- A spawn answered late has its program told to stop; one that ignores SIGTERM outlived its
  supervisor's SIGKILL, with nobody left to kill it, and ran beside its run's retry.
- Each spawn given up took an attempt's number, and the retry policy counted them: a run
  whose program asked for a retry (its exit code in `retry_on`) failed without one, though
  its program had run once.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import psutil
import pytest

from runyard.models import RunState
from tests import web
from tests.e2e.test_failpoints import set_faults
from tests.support import ServerProcess, processes_of, supervisors_of, wait_for

pytestmark = pytest.mark.e2e

IMPATIENT = {"RUNYARD_SUPERVISOR_TIMEOUT_S": "1"}


def supervisor(server: ServerProcess) -> psutil.Process:
    (sup,) = supervisors_of(server.data_dir)
    return sup


def outcomes_of(server: ServerProcess, run_id: str) -> list[str]:
    run = web.get(f"{server.url}/v1/runs/{run_id}").json()
    return [a["outcome"] for a in run["attempts"] or []]


def given_up(server: ServerProcess, run_id: str) -> bool:
    return "not_started" in outcomes_of(server, run_id)


def a_given_up_spawn(
    start_server, write_job, jobs_dir: Path, ran: Path, *, prelude: str = "", spec: str = ""
) -> tuple[ServerProcess, psutil.Process, str]:
    """A run whose first attempt's program starts, its supervisor stopped before it answers
    (a failpoint, once), and whose spawn the server has given up: (server, supervisor, run)."""
    script = (
        f"{prelude}echo start $RUNYARD_ATTEMPT >> {ran}; "
        f'if [ "$RUNYARD_ATTEMPT" = 1 ]; then sleep 60; fi; echo end $RUNYARD_ATTEMPT >> {ran}'
    )
    write_job("late", f"command = {json.dumps(['sh', '-c', script])}\n{spec}")
    server = start_server(jobs_dir, env={"RUNYARD_FAILPOINTS": "none", **IMPATIENT})
    set_faults(server, "before_spawn_answer")  # the supervisor stops between spawn and answer
    sup = supervisor(server)
    run_id = web.post(f"{server.url}/v1/runs", json={"job": "late"}).json()["id"]
    wait_for(lambda: sup.status() == psutil.STATUS_STOPPED, what="the supervisor stopped")
    set_faults(server, "")  # once only: its successor spawns as ever
    wait_for(lambda: given_up(server, run_id), what="the spawn given up")
    return server, sup, run_id


@pytest.mark.timeout(120)
def test_a_late_spawn_that_ignores_sigterm_dies_with_its_supervisor(
    start_server, write_job, jobs_dir: Path, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    server, sup, run_id = a_given_up_spawn(
        start_server, write_job, jobs_dir, ran, prelude="trap '' TERM; ", spec="kill_grace_s = 30\n"
    )
    sup.send_signal(signal.SIGCONT)
    wait_for(lambda: "late_spawn_stopped" in server.log_path.read_text(), what="its answer")
    assert ran.read_text().split() == ["start", "1"]  # it runs on, deaf to the SIGTERM
    sup.kill()
    with server.client() as c:
        done = server.wait_run(c, run_id, timeout=60)
    assert done.state is RunState.SUCCEEDED, done.reason
    # killed with its supervisor, before the retry: no second live attempt, and never ended
    assert not processes_of(server.data_dir)
    lines = ran.read_text().splitlines()
    assert lines == ["start 1", f"start {done.attempt}", f"end {done.attempt}"], lines


@pytest.mark.timeout(120)
def test_spawns_given_up_spend_none_of_the_retry_budget(
    start_server, write_job, jobs_dir: Path, tmp_path: Path
) -> None:
    flag = tmp_path / "flag"
    script = f"[ -e {flag} ] && exit 0; touch {flag}; exit 75"  # asks for one retry
    write_job(
        "flaky",
        f"command = {json.dumps(['sh', '-c', script])}\nmax_attempts = 2\nretry_on = [75]\n"
        "[backoff]\nbase_s = 0.1\njitter = 0\n",
    )
    server = start_server(jobs_dir, env=IMPATIENT)
    sup = supervisor(server)
    sup.send_signal(signal.SIGSTOP)
    try:
        run_id = web.post(f"{server.url}/v1/runs", json={"job": "flaky"}).json()["id"]
        wait_for(lambda: given_up(server, run_id), what="a spawn given up")
    finally:
        sup.send_signal(signal.SIGCONT)
    with server.client() as c:
        done = server.wait_run(c, run_id, timeout=60)
    assert done.state is RunState.SUCCEEDED, done.reason
    ran = [o for o in outcomes_of(server, run_id) if o != "not_started"]
    assert ran == ["exit", "exit"]  # its two attempts, whatever number they took


@pytest.mark.timeout(120)
def test_a_late_spawn_is_not_left_behind_by_a_shutdown(
    start_server, write_job, jobs_dir: Path, tmp_path: Path
) -> None:
    """A probe: the spawn given up (its attempt ended, not started), the server stopped, and
    its supervisor killed before the next start. Nothing knew the program any more: the
    restarted server's retry ran beside it."""
    ran = tmp_path / "ran"
    server, sup, run_id = a_given_up_spawn(start_server, write_job, jobs_dir, ran)
    server.stop()  # SIGTERM: a clean shutdown
    sup.kill()
    assert not processes_of(server.data_dir)  # killed at the shutdown, not left to run on
    again = start_server(jobs_dir, data_dir=server.data_dir, env=IMPATIENT)
    with again.client() as c:
        done = again.wait_run(c, run_id, timeout=60)
    assert done.state is RunState.SUCCEEDED, done.reason
    lines = ran.read_text().splitlines()
    assert lines == ["start 1", f"start {done.attempt}", f"end {done.attempt}"], lines
