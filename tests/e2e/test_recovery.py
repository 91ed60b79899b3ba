"""Nothing lost: crashes at exact points, a program ending while the server is down, a killed
supervisor, SIGTERM with programs running. Real server processes, real programs."""

from __future__ import annotations

import contextlib
import itertools
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest

from runyard.client import APIError, Client
from runyard.models import RunState
from runyard.schemas import RunView
from tests import web
from tests.support import kill_unwarded, processes_of, supervisors_of, wait_for

pytestmark = pytest.mark.e2e

JOBS = {
    "quick": 'command = ["sh", "-c", "echo quick attempt $RUNYARD_ATTEMPT"]\n',
    "long": 'command = ["sh", "-c", "echo start; sleep {s}; echo end"]\n'
    '[params.s]\ntype = "float"\ndefault = 1.5\n',
    "failing": 'command = ["sh", "-c", "echo failing; exit 3"]\n',
    # ends with code 5 once the test creates `go` in its workspace: "finishes while down"
    "gate": 'command = ["sh", "-c", "echo waiting; while [ ! -e go ]; do sleep 0.05; done; '
    'echo released; exit 5"]\n',
    "flaky": 'command = ["sh", "-c", "echo try $RUNYARD_ATTEMPT; '
    '[ $RUNYARD_ATTEMPT -ge 2 ] || exit 75"]\n'
    "max_attempts = 3\nretry_on = [75]\n[backoff]\nbase_s = 0.2\njitter = 0\n",
    "lost_retry": 'command = ["sleep", "60"]\nmax_attempts = 2\nretry_on = ["lost"]\n',
    "lost_fail": 'command = ["sleep", "60"]\n',
    # writes its own exit file ("exit code 0", ended in 1970), leaves its group, runs on
    "forger": 'command = ["sh", "{jobs_dir}/forge.sh"]\n',
}
# (a script: a command's braces are placeholders, and the record is JSON)
FORGE = """\
printf '{"key":"%s","exit_code":0,"ended_at":2.0}' "$RUNYARD_ATTEMPT_KEY" \\
    > "../attempt-$RUNYARD_ATTEMPT.exit.json"
setsid sleep 600 &
echo forged
sleep 600
echo "still here after its run ended"
exit 3
"""


@pytest.fixture
def jobs(write_job, jobs_dir: Path) -> Path:
    for name, text in JOBS.items():
        write_job(name, text)
    (jobs_dir / "forge.sh").write_text(FORGE)
    return jobs_dir


def submit_through_crash(server, job: str, key: str, **params: object) -> None:
    """Submit; the server may die (failpoint) before or after answering."""
    with contextlib.suppress(httpx.HTTPError):
        web.post(
            f"{server.url}/v1/runs",
            json={"job": job, "params": params},
            headers={"Idempotency-Key": key},
            timeout=10,
        )
    assert server.proc.wait(30) == -signal.SIGKILL


def resubmit(c: Client, job: str, key: str, **params: object) -> RunView:
    """Idempotency makes "did my submit land?" safe to answer by asking again."""
    return c.submit(job, params, idempotency_key=key)


def assert_attempts_never_overlap(run: RunView) -> None:
    spans = [(a.started_at, a.ended_at) for a in run.attempts or [] if a.started_at]
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end is not None
        assert start is not None
        assert end <= start


def test_crash_before_spawn_requeues_without_spending_an_attempt(start_server, jobs) -> None:
    server = start_server(jobs, env={"RUNYARD_FAILPOINTS": "before_spawn"})
    submit_through_crash(server, "quick", "k-quick")
    server = start_server(jobs)
    with server.client() as c:
        run = server.wait_run(c, resubmit(c, "quick", "k-quick").id)
        assert run.state is RunState.SUCCEEDED
        assert [(a.number, a.outcome) for a in run.attempts or []] == [
            (1, "not_started"),
            (2, "exit"),
        ]
        assert c.logs(run.id)[0] == b"quick attempt 2\n"


def test_crash_after_spawn_adopts_the_running_program(start_server, jobs) -> None:
    server = start_server(jobs, env={"RUNYARD_FAILPOINTS": "after_spawn"})
    submit_through_crash(server, "long", "k-long", s=1.0)
    survivors = processes_of(server.data_dir)
    assert survivors  # the program outlived the server
    server = start_server(jobs)
    with server.client() as c:
        run = server.wait_run(c, resubmit(c, "long", "k-long", s=1.0).id)
        assert run.state is RunState.SUCCEEDED
        (attempt,) = run.attempts or []  # adopted, not restarted
        assert attempt.pid in {p.pid for p in survivors}
        assert c.logs(run.id)[0] == b"start\nend\n"


def test_a_cancel_flagged_just_before_a_crash_stops_the_adopted_program(start_server, jobs) -> None:
    """A probe: the server died between writing a run's cancel flag and telling the
    supervisor; the next one adopted the program, never stopped it, and recorded the run
    `cancelled` when it ended on its own, exit code 0."""
    server = start_server(jobs, env={"RUNYARD_FAILPOINTS": "after_cancel_flag"})
    with server.client() as c:
        run = c.submit("long", {"s": 60.0})
        wait_for(lambda: c.run(run.id).state is RunState.RUNNING, what="running")
    with contextlib.suppress(httpx.HTTPError):
        web.post(f"{server.url}/v1/runs/{run.id}/cancel", timeout=10)
    assert server.proc.wait(30) == -signal.SIGKILL  # flagged; its program not told
    server = start_server(jobs)
    with server.client() as c:
        done = server.wait_run(c, run.id, timeout=30)  # long before its 60 s
    assert done.state is RunState.CANCELLED
    (attempt,) = done.attempts or []  # adopted, not started again, then stopped
    assert (attempt.exit_code, attempt.signal) == (None, signal.SIGTERM)
    assert attempt.pid not in {p.pid for p in processes_of(server.data_dir)}


def test_crash_before_end_is_finalised_from_the_exit_file(start_server, jobs) -> None:
    server = start_server(jobs, env={"RUNYARD_FAILPOINTS": "before_end"})
    submit_through_crash(server, "failing", "k-fail")
    server = start_server(jobs)
    with server.client() as c:
        run = server.wait_run(c, resubmit(c, "failing", "k-fail").id)
        assert run.state is RunState.FAILED
        assert run.exit_code == 3
        assert len(run.attempts or []) == 1
        assert c.logs(run.id)[0] == b"failing\n"


def test_sigkill_while_running_and_a_program_ending_while_down(start_server, jobs) -> None:
    server = start_server(jobs)
    with server.client() as c:
        long = c.submit("long", {"s": 2.0})
        gate = c.submit("gate")
        flaky = c.submit("flaky")
        wait_for(
            lambda: all(c.run(r.id).state is RunState.RUNNING for r in (long, gate)),
            what="long and gate running",
        )
        wait_for(lambda: b"waiting" in c.logs(gate.id)[0], what="gate waiting")
        # flaky's first attempt was spawned (its log is opened just before): it exits 75
        # whether or not the server is still there to hear it
        first = server.data_dir / "runs" / flaky.id / "attempt-1.log"
        wait_for(first.exists, what="flaky's first attempt spawned")
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    # while the server is down, the gate's program finishes with exit code 5
    (server.data_dir / "runs" / gate.id / "workspace" / "go").touch()
    wait_for(
        (server.data_dir / "runs" / gate.id / "attempt-1.exit.json").exists,
        what="gate exit file",
    )
    server = start_server(jobs)
    with server.client() as c:
        runs = {r.id: server.wait_run(c, r.id) for r in (long, gate, flaky)}
    assert runs[gate.id].state is RunState.FAILED
    assert runs[gate.id].exit_code == 5  # its real exit code, learned at the next start
    assert runs[long.id].state is RunState.SUCCEEDED
    assert len(runs[long.id].attempts or []) == 1  # re-adopted, not restarted
    assert runs[flaky.id].state is RunState.SUCCEEDED
    assert [a.exit_code for a in runs[flaky.id].attempts or []] == [75, 0]
    for run in runs.values():
        assert_attempts_never_overlap(run)
    with server.client() as c:
        assert c.logs(long.id)[0] == b"start\nend\n"
        assert c.logs(gate.id)[0] == b"waiting\nreleased\n"


def test_killed_supervisor_loses_runs_then_retries_or_fails(start_server, jobs) -> None:
    server = start_server(jobs)
    with server.client() as c:
        retry = c.submit("lost_retry")
        fail = c.submit("lost_fail")
        wait_for(
            lambda: all(
                c.run(r.id).attempts and c.run(r.id).attempts[0].pid for r in (retry, fail)
            ),
            what="both started",
        )
        first_pids = {c.run(r.id).attempts[0].pid for r in (retry, fail)}
        (supervisor,) = supervisors_of(server.data_dir)
        supervisor.kill()
        failed = server.wait_run(c, fail.id)
        assert failed.state is RunState.FAILED
        assert (failed.reason or "").startswith("lost")
        wait_for(lambda: len(c.run(retry.id).attempts or []) == 2, what="retry started")
        again = c.run(retry.id)
        assert again.state is RunState.RUNNING
        assert again.attempts[0].outcome == "lost"
        # nothing of the lost attempts survives; the retry runs under a new supervisor
        for pid in first_pids:
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
        # one: the launch's first process (it forks the supervisor, then exits) may linger
        # for a moment on a loaded machine
        wait_for(lambda: len(supervisors_of(server.data_dir)) == 1, what="one supervisor")
        c.cancel(retry.id)
        assert server.wait_run(c, retry.id).state is RunState.CANCELLED


@pytest.mark.parametrize("server_too", [True, False], ids=["with-the-server", "alone"])
def test_an_exit_file_its_program_wrote_is_ignored_and_the_program_killed(
    start_server, jobs, server_too: bool
) -> None:
    """The supervisor dies (with the server, or alone) while a program that wrote its own
    exit file runs on: the file is not the supervisor's (it writes one only once its program
    ended), so the attempt is lost, and nothing of the program outlives it (it used to be
    believed: `succeeded`, exit code 0, finished in 1970, the program running on)."""
    server = start_server(jobs)
    with server.client() as c:
        run = c.submit("forger")
        wait_for(lambda: b"forged" in c.logs(run.id)[0], what="the exit file forged")
        wait_for(lambda: len(processes_of(server.data_dir)) == 3, what="sh, sleep, escapee")
        (supervisor,) = supervisors_of(server.data_dir)
    if server_too:
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    kill_unwarded(supervisor)  # its warden too: else the program is ended with it
    if server_too:
        assert len(processes_of(server.data_dir)) == 3  # the program outlived both
        server = start_server(jobs)
    with server.client() as c:
        done = server.wait_run(c, run.id)
        assert done.state is RunState.FAILED  # lost, and `lost` is not retried: failed
        assert (done.reason or "").startswith("lost: its program ran on with no supervisor")
        assert done.exit_code is None  # nothing of the file was believed
        (attempt,) = done.attempts or []
        assert attempt.outcome == "lost"
        assert done.started_at is not None and done.finished_at is not None
        assert done.finished_at >= done.started_at
        assert attempt.started_at is not None and attempt.ended_at is not None
        assert attempt.ended_at >= attempt.started_at
    assert processes_of(server.data_dir) == []  # its group and its escapee: killed
    assert b"still here" not in (server.data_dir / "runs" / run.id / "attempt-1.log").read_bytes()


def test_an_exit_file_written_before_the_supervisor_died_is_believed(start_server, jobs) -> None:
    """The program really ended and the supervisor wrote its record, then died with the
    server: the next start finalises the run from that record."""
    server = start_server(jobs)
    with server.client() as c:
        gate = c.submit("gate")
        wait_for(lambda: b"waiting" in c.logs(gate.id)[0], what="gate waiting")
        (supervisor,) = supervisors_of(server.data_dir)
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    (server.data_dir / "runs" / gate.id / "workspace" / "go").touch()
    exit_file = server.data_dir / "runs" / gate.id / "attempt-1.exit.json"
    wait_for(exit_file.exists, what="gate exit file")
    supervisor.kill()
    supervisor.wait(10)
    server = start_server(jobs)
    with server.client() as c:
        done = server.wait_run(c, gate.id)
        assert (done.state, done.exit_code, done.reason) == (RunState.FAILED, 5, "exit code 5")
        assert [a.outcome for a in done.attempts or []] == ["exit"]
        assert c.logs(gate.id)[0] == b"waiting\nreleased\n"


@pytest.mark.timeout(120)
def test_a_supervisor_killed_again_while_it_restarts_is_restarted_until_one_stays(
    start_server, jobs
) -> None:
    """A bad few seconds: the supervisor is killed, and so is every one the server starts in
    its place for 3 s. The server tries again until one stays up: ready again, and a run
    submitted then runs once (it used to stay disconnected for good, never ready, each
    claimed run re-queued every second with a new attempt number)."""
    server = start_server(jobs)
    with server.client() as c:
        assert server.wait_run(c, c.submit("quick").id).state is RunState.SUCCEEDED
        killed: set[int] = set()
        until = time.monotonic() + 3
        while time.monotonic() < until:  # the fault: not a wait for anything
            for sup in supervisors_of(server.data_dir):
                with contextlib.suppress(psutil.Error):
                    sup.kill()
                    killed.add(sup.pid)
            time.sleep(0.01)
        assert len(killed) > 1  # the server did start another (and it was killed too)
        wait_for(lambda: web.get(f"{server.url}/health/ready").status_code == 200,
                 timeout=60, what="ready again")  # fmt: skip
        after = server.wait_run(c, c.submit("quick").id)
        assert after.state is RunState.SUCCEEDED and after.attempt == 1
        assert len(supervisors_of(server.data_dir)) == 1


def test_idempotent_resubmission(start_server, jobs) -> None:
    server = start_server(jobs)
    with server.client() as c:
        first = c.submit("quick", {}, idempotency_key="order-42")
        again = c.submit("quick", {}, idempotency_key="order-42")
        assert again.id == first.id
        with pytest.raises(APIError) as info:
            c.submit("failing", {}, idempotency_key="order-42")
        assert info.value.status == 409
        assert "Idempotency-Key" in info.value.detail
        assert len(c.runs().runs) == 1


def test_sigterm_leaves_programs_running_and_next_start_adopts_them(start_server, jobs) -> None:
    server = start_server(jobs)
    with server.client() as c:
        runs = [c.submit("long", {"s": 2.0}) for _ in range(2)]
        wait_for(lambda: all(c.run(r.id).state is RunState.RUNNING for r in runs), what="running")
    code = server.stop(signal.SIGTERM, timeout=15)  # within the shutdown timeout (10 s)
    assert code in (0, -signal.SIGTERM)
    assert len([p for p in processes_of(server.data_dir) if p.name() == "sh"]) == 2
    server = start_server(jobs)
    with server.client() as c:
        for r in runs:
            done = server.wait_run(c, r.id)
            assert done.state is RunState.SUCCEEDED
            assert len(done.attempts or []) == 1


def test_drain_waits_for_programs_and_refuses_submissions(start_server, jobs) -> None:
    server = start_server(jobs, env={"RUNYARD_DRAIN": "true"})
    with server.client() as c:
        run = c.submit("long", {"s": 1.5})
        wait_for(lambda: c.run(run.id).state is RunState.RUNNING, what="running")
        server.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: web.get(f"{server.url}/health/ready").status_code == 503, what="draining")
        refused = web.post(f"{server.url}/v1/runs", json={"job": "quick"})
        assert refused.status_code == 503
        assert "Retry-After" in refused.headers
        assert c.run(run.id).state is RunState.RUNNING  # reads keep working while draining
    assert server.proc.wait(30) in (0, -signal.SIGTERM)
    assert processes_of(server.data_dir) == []
    server = start_server(jobs)
    with server.client() as c:
        done = c.run(run.id)
        assert done.state is RunState.SUCCEEDED
        assert c.runs(job="quick").runs == []


def test_drain_timeout_cancels_what_still_runs(start_server, jobs) -> None:
    env = {"RUNYARD_DRAIN": "true", "RUNYARD_DRAIN_TIMEOUT_S": "0.5"}
    server = start_server(jobs, env=env)
    with server.client() as c:
        run = c.submit("long", {"s": 60})
        wait_for(lambda: c.run(run.id).state is RunState.RUNNING, what="running")
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) in (0, -signal.SIGTERM)
    server = start_server(jobs)
    with server.client() as c:
        assert c.run(run.id).state is RunState.CANCELLED


def test_a_program_that_ran_on_beside_no_exit_file_is_not_said_to_have_written_one(
    start_server, jobs
) -> None:
    """Its run's directory replaced by a file while the server and the supervisor were down:
    the exit file cannot be read (not a directory), and the program still runs. The reason
    said it ran on "beside an exit file it wrote" (a damaged-data-directory probe)."""
    server = start_server(jobs)
    with server.client() as c:
        run = c.submit("lost_fail")
        wait_for(lambda: len(processes_of(server.data_dir)) == 1, what="the program started")
        (supervisor,) = supervisors_of(server.data_dir)
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    kill_unwarded(supervisor)
    run_dir = server.data_dir / "runs" / run.id
    run_dir.rename(run_dir.with_name(run.id + ".aside"))  # the program runs on in it
    run_dir.write_text("a file where the run's directory was")
    server = start_server(jobs)
    with server.client() as c:
        done = server.wait_run(c, run.id)
        assert done.state is RunState.FAILED
        reason = done.reason or ""
        assert reason.startswith("lost: its program ran on with no supervisor"), reason
        assert reason.endswith("and an unreadable exit file (Not a directory)"), reason
        assert "it wrote" not in reason
    assert processes_of(server.data_dir) == []  # killed all the same
