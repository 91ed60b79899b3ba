"""A server id's lives: every registration is a process's own, and what the life it replaced
may still run (on another host, or in a paused or copied process) is retried only once that
lease has ended and its supervisor fenced it (a probe: a new server under a lapsed id retried
the paused one's run 1 s after the lapse, and a copy of a live server's data directory shared
its lease token, both renewing it for ever, each with the run alive)."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import psycopg
import pytest

from tests import web
from tests.e2e.test_self_fencing import Watch, fence_job, live_attempts, paused, run_state
from tests.support import ServerProcess, wait_for

pytestmark = pytest.mark.e2e

MARGIN_S = 4.0  # RUNYARD_REAP_MARGIN_S: the fence kills half of it after the lapse


@pytest.fixture
def locks(tmp_path: Path) -> Path:
    d = tmp_path / "locks"
    d.mkdir()
    return d


@pytest.fixture
def lives_jobs(write_job, jobs_dir: Path, locks: Path) -> Path:
    write_job("long", fence_job(locks))
    write_job("quick", 'command = ["true"]\n')
    write_job("nap", 'command = ["sleep", "600"]\n')
    return jobs_dir


def member(
    start_server, jobs: Path, database: str, data_dir: Path, lease_s: float = 1.5, **env: str
):
    """A server under the id "n" (the host name both lives share), in `data_dir`."""
    settings = {
        "RUNYARD_DATABASE_URL": database,
        "RUNYARD_SERVER_ID": "n",
        "RUNYARD_LEASE_S": str(lease_s),
        "RUNYARD_REAP_MARGIN_S": str(MARGIN_S),
        **env,
    }
    return start_server(jobs, capacity=2, data_dir=data_dir, env=settings)


def row(database: str, sql: str, *args: object) -> tuple:
    with psycopg.connect(database) as conn:
        found = conn.execute(sql, args).fetchone()
    assert found is not None, sql
    return tuple(found)


def tried(database: str, run_id: str) -> list[tuple]:
    """(number, state, created_at, ended_at) of the run's attempts."""
    with psycopg.connect(database) as conn:
        return conn.execute(
            "SELECT number, state, created_at, ended_at FROM attempts WHERE run_id = %s "
            "ORDER BY number",
            (run_id,),
        ).fetchall()


def start_long(server: ServerProcess, database: str, job: str = "long") -> str:
    run_id = web.post(f"{server.url}/v1/runs", json={"job": job}).json()["id"]
    wait_for(lambda: [a[:2] for a in tried(database, run_id)] == [(1, "running")]
             and "1" in live_attempts([server.data_dir]).get(run_id, ()),
             what="attempt 1 running")  # fmt: skip
    return run_id


def ready(server: ServerProcess) -> bool:
    return web.get(f"{server.url}/health/ready").status_code == 200


@pytest.mark.timeout(120)
def test_a_new_server_under_a_lapsed_id_retries_only_once_the_old_one_is_fenced(
    start_server, lives_jobs, database, tmp_path, locks
) -> None:
    old = member(start_server, lives_jobs, database, tmp_path / "old")
    run_id = start_long(old, database)
    with Watch(database, [old.data_dir, tmp_path / "new"]) as watch:
        with paused(old):  # its supervisor runs attempt 1 on, until its own fence
            (ended,) = wait_for(
                lambda: (r := row(database, "SELECT lease_expires_at FROM servers"))[0]
                < time.time() and r, what="the paused server's lease to lapse")  # fmt: skip
            # another data directory: another host's server, the same id (its host name)
            new = member(start_server, lives_jobs, database, tmp_path / "new")
            # its start-up reconcile ran before it was ready: if that was inside the margin, it
            # held attempt 1 back (on a loaded machine it may start after, with nothing to hold)
            recovered_within_margin = time.time() < ended + MARGIN_S
            wait_for(lambda: run_state(database, run_id) == "succeeded", timeout=60,
                     what="the run retried by the new server")  # fmt: skip
        first, second = tried(database, run_id)
        assert (first[:2], second[:2]) == ((1, "lost"), (2, "exited"))
        # the old lease's end and the margin: by then the old supervisor has fenced attempt 1
        assert first[3] >= ended + MARGIN_S <= second[2], (ended, first, second)
        wait_for(lambda: b"server_id_taken_over" in old.log_path.read_bytes(),
                 what="the old server, back, to stand by")  # fmt: skip
        wait_for(lambda: watch.samples > 10, what="the watch to sample after its return")
    assert watch.violations == []
    assert not (locks / "overlaps").exists()
    if recovered_within_margin:
        assert b"attempt_held_back" in new.log_path.read_bytes()
    assert b"self-fenced" in (old.data_dir / "supervisor.log").read_bytes()
    # one life holds the id; the other claims nothing (its readiness, rebuilt each second)
    wait_for(lambda: not ready(old), what="the old server to say it is not ready")
    assert ready(new)


@pytest.mark.timeout(150)
def test_a_copy_of_a_live_servers_data_directory_takes_the_id_and_the_original_stands_by(
    start_server, lives_jobs, database, tmp_path, locks
) -> None:
    # stopped, it drains: what the id still runs then is cancelled, if it is its own
    a = member(start_server, lives_jobs, database, tmp_path / "a", RUNYARD_DRAIN="true",
               RUNYARD_DRAIN_TIMEOUT_S="5")  # fmt: skip
    run_id = start_long(a, database)
    copy = tmp_path / "b"
    copy.mkdir()
    shutil.copy2(a.data_dir / "instance-id", copy / "instance-id")  # a cloned disk's
    with Watch(database, [a.data_dir, copy]) as watch:
        b = member(start_server, lives_jobs, database, copy)
        wait_for(lambda: b"server_id_taken_over" in a.log_path.read_bytes(),
                 what="the original to hear the id was taken over")  # fmt: skip
        wait_for(lambda: run_state(database, run_id) == "succeeded", timeout=60,
                 what="the run retried by the copy")  # fmt: skip
        wait_for(lambda: watch.samples > 10, what="the watch to sample")
    assert watch.violations == []
    assert not (locks / "overlaps").exists()
    (replaced,) = row(database, "SELECT previous_expires_at FROM servers")
    first, second = tried(database, run_id)
    assert (first[:2], second[:2]) == ((1, "lost"), (2, "exited"))
    assert second[2] >= replaced + MARGIN_S, (replaced, second)  # after the original's fence
    assert live_attempts([a.data_dir, copy]) == {}

    # one lease, the copy's, renewed by it alone; the original claims nothing
    token, beat = row(database, "SELECT token, heartbeat_at FROM servers")
    wait_for(lambda: row(database, "SELECT heartbeat_at FROM servers")[0] > beat + 3,
             what="two leases' worth of the copy's renewals")  # fmt: skip
    assert row(database, "SELECT token FROM servers") == (token,)
    wait_for(lambda: not ready(a), what="the original to say it is not ready")
    said = web.get(f"{a.url}/health/ready").json()["checks"]["lease"]
    assert said.startswith("taken over: another process registered this server id"), said
    assert ready(b)
    quick = web.post(f"{a.url}/v1/runs", json={"job": "quick"}).json()["id"]
    wait_for(lambda: run_state(database, quick) == "succeeded", what="a run submitted to a")
    assert (copy / "runs" / quick).exists() and not (a.data_dir / "runs" / quick).exists()

    # stopping, the original leaves the copy's runs alone (its drain cancelled all of the id's)
    nap = web.post(f"{b.url}/v1/runs", json={"job": "nap"}).json()["id"]
    wait_for(lambda: "1" in live_attempts([copy]).get(nap, ()), what="a run on the copy")
    a.stop()
    state = row(database, "SELECT state, cancel_requested FROM runs WHERE id = %s", nap)
    assert state == ("running", False)
    web.post(f"{b.url}/v1/runs/{nap}/cancel")
    wait_for(lambda: run_state(database, nap) == "cancelled", what="the nap cancelled")


@pytest.mark.timeout(120)
def test_a_server_restarted_within_its_lease_keeps_its_program_past_the_old_lease(
    start_server, lives_jobs, database, tmp_path
) -> None:
    # the common restart: the server process dies, its supervisor and program live on, and it
    # is back within its lease: the new life adopts the program at once, and the supervisor
    # holds it under the new lease, not fencing it when the old one would have ended
    lease_s = 6.0
    first = member(start_server, lives_jobs, database, tmp_path / "a", lease_s)
    run_id = start_long(first, database, "nap")
    pid = row(database, "SELECT pid FROM attempts WHERE run_id = %s", run_id)[0]
    old_token, ended = row(database, "SELECT token, lease_expires_at FROM servers")
    first.stop(signal.SIGKILL)
    again = member(start_server, lives_jobs, database, tmp_path / "a", lease_s)
    assert row(database, "SELECT token FROM servers") != (old_token,)  # a life of its own
    started, replaced = row(database, "SELECT started_at, previous_expires_at FROM servers")
    assert ended <= replaced and started < replaced  # registered while the old lease lasted
    beat = "SELECT heartbeat_at FROM servers"
    wait_for(lambda: row(database, beat)[0] > replaced + MARGIN_S, timeout=30,
             what="the new life renewing past the old lease and its margin")  # fmt: skip
    assert [a[:2] for a in tried(database, run_id)] == [(1, "running")]  # adopted, no retry
    assert row(database, "SELECT pid FROM attempts WHERE run_id = %s", run_id) == (pid,)
    assert "1" in live_attempts([again.data_dir]).get(run_id, ())
    assert b"self-fenced" not in (again.data_dir / "supervisor.log").read_bytes()
    web.post(f"{again.url}/v1/runs/{run_id}/cancel")
    wait_for(lambda: run_state(database, run_id) == "cancelled", what="the run cancelled")


@pytest.mark.timeout(120)
def test_schedules_fire_on_when_the_paused_leaders_id_has_a_new_life(
    start_server, lives_jobs, database, tmp_path
) -> None:
    """A re-probe: the paused leader's session kept the scheduler's lock while a replacement
    host renewed the id's lease, so the leader never read as silent and nothing fired."""
    old = member(start_server, lives_jobs, database, tmp_path / "old")

    def leading(s: ServerProcess) -> bool:
        return web.get(f"{s.url}/health").json()["scheduler"]["status"] == "running"

    wait_for(lambda: leading(old), what="the first server to lead")
    with paused(old):
        wait_for(lambda: row(database, "SELECT lease_expires_at FROM servers")[0] < time.time(),
                 what="the paused leader's lease to lapse")  # fmt: skip
        new = member(start_server, lives_jobs, database, tmp_path / "new")
        made = web.post(f"{new.url}/v1/schedules",
                        json={"job": "quick", "interval_s": 1, "overlap": "allow"})  # fmt: skip
        assert made.status_code == 201, made.text
        fired = "SELECT count(*) FROM runs WHERE schedule_id = %s"
        wait_for(lambda: row(database, fired, made.json()["id"])[0] >= 2, timeout=30,
                 what="the schedule to fire while the old leader is paused")  # fmt: skip
        assert leading(new)
    wait_for(lambda: b"server_id_taken_over" in old.log_path.read_bytes(),
             what="the old server, back, to stand by")  # fmt: skip
    wait_for(lambda: not leading(old), what="the old server to lead no more")
    assert leading(new)
