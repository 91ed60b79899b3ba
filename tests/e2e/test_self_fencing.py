"""Self-fencing in a cluster: a server that cannot renew its lease has its programs stopped by
its own supervisor before any other server may retry them, so a run never has two live
attempts, even while the server is paused with SIGSTOP (issue 14, defect 7)."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from tests import web
from tests.support import ServerProcess, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def locks(tmp_path: Path) -> Path:
    d = tmp_path / "locks"
    d.mkdir()
    return d


def fence_job(locks: Path) -> str:
    """Each attempt holds an exclusive lock on its run's file for as long as any process of it
    lives (the shell and its sleep share the descriptor): an attempt that finds the lock taken
    proves two attempts of one run alive at once. Attempt 1 ignores SIGTERM and asks for a long
    kill grace: only the fence's own bounded grace and SIGKILL can stop it."""
    program = (
        "trap '' TERM; exec 9>>\"$LOCKS/$RUNYARD_RUN_ID\"; "
        'flock -n 9 || echo "$RUNYARD_RUN_ID $RUNYARD_ATTEMPT" >> "$LOCKS/overlaps"; '
        'if [ "$RUNYARD_ATTEMPT" = 1 ]; then sleep 120; fi'
    )
    return (
        f'command = ["sh", "-c", {json.dumps(program)}]\nmax_attempts = 3\nretry_on = ["lost"]\n'
        f'kill_grace_s = 60\nenv = {{ LOCKS = "{locks}" }}\n[backoff]\nbase_s = 0.1\njitter = 0\n'
    )


@pytest.fixture
def fence_jobs(write_job, jobs_dir: Path, locks: Path) -> Path:
    write_job("long", fence_job(locks))
    return jobs_dir


def server(start_server, jobs: Path, database: str, tmp: Path, name: str, **env: str):
    settings = {"RUNYARD_DATABASE_URL": database, "RUNYARD_SERVER_ID": name,
                "RUNYARD_LEASE_S": "1.5", "RUNYARD_REAP_MARGIN_S": "2", **env}  # fmt: skip
    return start_server(jobs, capacity=2, data_dir=tmp / name, env=settings)


def live_attempts(data_dirs: list[Path]) -> dict[str, set[str]]:
    """Run id -> the attempts that have a live (not zombie) process, from /proc."""
    needles = [f"RUNYARD_WORKSPACE={d}".encode() for d in data_dirs]
    found: dict[str, set[str]] = defaultdict(set)
    for proc in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            env = dict(
                item.split(b"=", 1)
                for item in Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
                if b"=" in item
            )
            workspace = b"RUNYARD_WORKSPACE=" + env.get(b"RUNYARD_WORKSPACE", b"")
            if any(workspace.startswith(n) for n in needles):
                run_id, attempt = env.get(b"RUNYARD_RUN_ID", b"?"), env.get(b"RUNYARD_ATTEMPT")
                found[run_id.decode()].add((attempt or b"?").decode())
    return found


class Watch:
    """Samples /proc and the store until stopped: every moment two attempts of one run were
    alive (processes), or live (rows), is a violation."""

    def __init__(self, database: str, data_dirs: list[Path]) -> None:
        self.database, self.data_dirs = database, data_dirs
        self.violations: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self.database, autocommit=True) as conn:
            while not self._stop.is_set():
                for run_id, attempts in live_attempts(self.data_dirs).items():
                    if len(attempts) > 1:
                        self.violations.append(f"processes of {run_id}: {sorted(attempts)}")
                rows = conn.execute(
                    "SELECT run_id, count(*) FROM attempts WHERE state IN ('starting', "
                    "'running') GROUP BY run_id HAVING count(*) > 1"
                ).fetchall()
                self.violations += [f"rows of {r[0]}: {r[1]} live" for r in rows]
                self.samples += 1

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def attempts(database: str, run_id: str) -> list[tuple]:
    with psycopg.connect(database) as conn:
        return conn.execute(
            "SELECT number, host, state, outcome FROM attempts WHERE run_id = %s ORDER BY number",
            (run_id,),
        ).fetchall()


def run_state(database: str, run_id: str) -> str:
    with psycopg.connect(database) as conn:
        return conn.execute("SELECT state FROM runs WHERE id = %s", (run_id,)).fetchone()[0]


@contextlib.contextmanager
def paused(s: ServerProcess) -> Iterator[None]:
    assert s.proc is not None
    s.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        s.proc.send_signal(signal.SIGCONT)


@pytest.mark.timeout(120)
def test_a_paused_server_never_leaves_two_live_attempts_of_a_run(
    start_server, fence_jobs, database, tmp_path, locks
) -> None:
    c1 = server(start_server, fence_jobs, database, tmp_path, "c1")
    c2 = server(start_server, fence_jobs, database, tmp_path, "c2")
    with paused(c2):  # both runs start on c1
        ids = [web.post(f"{c1.url}/v1/runs", json={"job": "long"}).json()["id"] for _ in "ab"]
        for run_id in ids:
            wait_for(lambda r=run_id: attempts(database, r) == [(1, "c1", "running", None)]
                     and "1" in live_attempts([c1.data_dir]).get(r, ()),
                     what="attempt 1 running on c1")  # fmt: skip
    with Watch(database, [c1.data_dir, c2.data_dir]) as watch:
        with paused(c1):  # c1 cannot renew: its supervisor must stop attempt 1 before c2 retries
            for run_id in ids:
                wait_for(lambda r=run_id: run_state(database, r) == "succeeded", timeout=60,
                         what="the run retried on c2 and succeeded")  # fmt: skip
        # c1 is back: it notices its lapsed lease, rejoins, and changes nothing
        wait_for(lambda: b"lease_lapsed" in c1.log_path.read_bytes(), what="c1 sees the lapse")
        wait_for(lambda: watch.samples > 10, what="the watch to sample after c1's return")
    assert watch.violations == []
    assert not (locks / "overlaps").exists()
    for run_id in ids:
        (first, second) = attempts(database, run_id)
        assert first == (1, "c1", "lost", "lost")
        assert second[:3] == (2, "c2", "exited")
        assert run_state(database, run_id) == "succeeded"
    assert live_attempts([c1.data_dir, c2.data_dir]) == {}
    assert b"self-fenced" in (c1.data_dir / "supervisor.log").read_bytes()


@pytest.mark.timeout(120)
def test_a_server_back_before_anyone_reaped_records_its_fenced_attempt_lost(
    start_server, fence_jobs, database, tmp_path, locks
) -> None:
    # One server over PostgreSQL is a cluster of one: a margin long enough that the server is
    # back (once the fence, at half the margin, has stopped the attempt) well before it could
    # reap its own lapsed lease, so it records the end its supervisor's fence wrote.
    c1 = server(start_server, fence_jobs, database, tmp_path, "c1", RUNYARD_REAP_MARGIN_S="16")
    run_id = web.post(f"{c1.url}/v1/runs", json={"job": "long"}).json()["id"]
    # its start recorded too, not only its process alive: paused before that, the attempt
    # would stay `starting` in the store, which is not what this test is about
    wait_for(lambda: attempts(database, run_id) == [(1, "c1", "running", None)]
             and "1" in live_attempts([c1.data_dir]).get(run_id, ()), what="attempt 1")  # fmt: skip
    with paused(c1):
        wait_for(lambda: run_id not in live_attempts([c1.data_dir]), timeout=60,
                 what="the supervisor to stop attempt 1 of the paused server")  # fmt: skip
        assert attempts(database, run_id) == [(1, "c1", "running", None)]  # nobody reaped
    wait_for(lambda: run_state(database, run_id) == "succeeded", timeout=60, what="the retry")
    first, *between, last = attempts(database, run_id)
    assert first == (1, "c1", "lost", "lost") and last[1:3] == ("c1", "exited")
    # back from its pause, the server claims nothing before it has renewed its lease (it
    # used to claim once, the supervisor refused the spawn, and the run carried an attempt
    # that never ran, recorded not_started or even lost)
    assert between == [], between
    with psycopg.connect(database) as conn:
        events = conn.execute(
            "SELECT data::text FROM run_events WHERE run_id = %s AND kind = 'state'", (run_id,)
        ).fetchall()
    assert any("lost: lease lapsed (self-fenced)" in e[0] for e in events), events
    assert not (locks / "overlaps").exists()


@pytest.mark.timeout(150)
def test_a_server_back_from_a_pause_hears_that_its_attempt_was_reaped(
    start_server, write_job, jobs_dir, database, tmp_path
) -> None:
    # The reaper's notification names the reaper: it used to name the attempt's own server,
    # which took it for its own change and skipped it, so that a log stream it served of the
    # reaped attempt waited for the retry (here 90 s) to end elsewhere.
    program = 'echo "attempt $RUNYARD_ATTEMPT"; exec sleep $((RUNYARD_ATTEMPT == 1 ? 120 : 90))'
    write_job(
        "twice",
        f'command = ["bash", "-c", {json.dumps(program)}]\nmax_attempts = 2\nretry_on = ["lost"]\n'
        "kill_grace_s = 1\n[backoff]\nbase_s = 0.1\njitter = 0\n",
    )
    c1 = server(start_server, jobs_dir, database, tmp_path, "c1")
    c2 = server(start_server, jobs_dir, database, tmp_path, "c2")
    with paused(c2):  # attempt 1 starts on c1
        run_id = web.post(f"{c1.url}/v1/runs", json={"job": "twice"}).json()["id"]
        wait_for(lambda: attempts(database, run_id) == [(1, "c1", "running", None)],
                 what="attempt 1 running on c1")  # fmt: skip
    seen: list[tuple[str, str]] = []
    ended = threading.Event()

    def follow() -> None:
        with (
            web.Client(base_url=c1.url, timeout=None) as client,
            client.stream("GET", f"/v1/runs/{run_id}/logs/stream") as resp,
        ):
            event = ""
            for line in resp.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    seen.append((event, line[6:]))
                    if event == "end":
                        ended.set()
                        return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    wait_for(lambda: ("log", "attempt 1") in seen, what="the stream on c1 to show attempt 1")
    with paused(c1):  # c2 reaps attempt 1 and runs attempt 2
        wait_for(lambda: [a[:3] for a in attempts(database, run_id)]
                 == [(1, "c1", "lost"), (2, "c2", "running")], timeout=60,
                 what="attempt 2 running on c2")  # fmt: skip
    assert ended.wait(30), f"c1's stream of attempt 1 never ended: {seen}"
    assert run_state(database, run_id) == "running"  # attempt 2 still runs: not its end
    kind, data = seen[-1]
    assert kind == "end" and json.loads(data)["attempt"] == 1, seen
    web.post(f"{c2.url}/v1/runs/{run_id}/cancel")
