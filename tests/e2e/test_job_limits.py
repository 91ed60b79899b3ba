"""A queued run runs as it was submitted, its job's concurrency limit too: a removed or broken
job file lifted the limit, and a job that must run one at a time (a licence, a shared
resource) ran its queued runs side by side (a probe: two started in the same millisecond)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard.models import RunState
from tests import web
from tests.support import ServerProcess, wait_for

pytestmark = pytest.mark.e2e


def one_at_a_time(lock: Path) -> str:
    """A job held to one run at a time that fails (exit 9) if another of it runs beside it."""
    script = f'mkdir "{lock}" || exit 9; sleep 2; rmdir "{lock}"'
    return f'command = ["sh", "-c", \'{script}\']\nconcurrency = 1\n'


def declared(server: ServerProcess) -> int:
    return web.get(f"{server.url}/v1/jobs/one").status_code


def run_three(server: ServerProcess) -> list[str]:
    with server.client() as c:
        return [c.submit("one").id for _ in range(3)]


def all_alone(server: ServerProcess, ids: list[str]) -> None:
    with server.client() as c:
        ended = [server.wait_run(c, run_id, timeout=60) for run_id in ids]
    assert [(r.state, r.exit_code) for r in ended] == [(RunState.SUCCEEDED, 0)] * 3


@pytest.mark.parametrize("how", ["removed", "broken"])
def test_a_jobs_limit_holds_for_its_queued_runs_when_its_file_goes(
    start_server, write_job, jobs_dir: Path, tmp_path: Path, how: str
) -> None:
    write_job("one", one_at_a_time(tmp_path / "lock"))
    server = start_server(jobs_dir, capacity=4)
    ids = run_three(server)
    if how == "removed":
        (jobs_dir / "one.toml").unlink()
    else:
        write_job("one", "command = [\n")
    all_alone(server, ids)


def test_a_jobs_limit_holds_for_its_queued_runs_across_a_restart_without_its_file(
    start_server, write_job, jobs_dir: Path, tmp_path: Path
) -> None:
    """The server's next life never saw the job declared: the limit is the stored runs'."""
    write_job("one", one_at_a_time(tmp_path / "lock"))
    server = start_server(jobs_dir, capacity=4)
    ids = run_three(server)
    server.stop()  # its program runs on under the supervisor; two runs wait in the queue
    (jobs_dir / "one.toml").unlink()
    server.start()
    all_alone(server, ids)


def test_a_jobs_limit_holds_when_its_file_goes_before_any_slot_frees(
    start_server, write_job, jobs_dir: Path, tmp_path: Path
) -> None:
    """A probe: the job declared, its runs submitted and its file removed while every slot
    was busy; no claim was made in between, and its limit was learnt only at a claim."""
    gate = tmp_path / "gate"
    write_job("hold", f'command = ["sh", "-c", \'while [ ! -e "{gate}" ]; do sleep 0.05; done\']\n')
    server = start_server(jobs_dir, capacity=2)
    with server.client() as c:
        holds = [c.submit("hold").id for _ in range(2)]
        wait_for(lambda: all(c.run(h).state is RunState.RUNNING for h in holds), what="both")
        write_job("one", one_at_a_time(tmp_path / "lock"))
        wait_for(lambda: declared(server) == 200, what="the job declared")
        ids = run_three(server)
        (jobs_dir / "one.toml").unlink()
        wait_for(lambda: declared(server) == 404, what="the job no longer declared")
    gate.touch()
    all_alone(server, ids)
