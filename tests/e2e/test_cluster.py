"""Three servers over one PostgreSQL: one queue, each run once, host loss survived, schedules
fired once, any server answering about any run."""

from __future__ import annotations

import itertools
import os
import signal
from collections import defaultdict
from pathlib import Path

import psycopg
import pytest

from tests import web
from tests.support import ServerProcess, kill_everything, wait_for

pytestmark = pytest.mark.e2e

LOG_LINES = 300


@pytest.fixture
def cluster_jobs(write_job, jobs_dir: Path) -> Path:
    write_job("quick", 'command = ["true"]\n')
    loop = "i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo line $i; sleep 0.005; done"
    write_job("talk", f'command = ["sh", "-c", "{loop}"]\n')
    write_job("nap", 'command = ["sleep", "2"]\nmax_attempts = 3\nretry_on = ["lost"]\n'
              '[backoff]\nbase_s = 0.1\njitter = 0\n')  # fmt: skip
    write_job("long", 'command = ["sleep", "600"]\n')
    return jobs_dir


def start_cluster(start_server, jobs: Path, database: str, tmp: Path, **env: str):
    def one(name: str) -> ServerProcess:
        settings = {"RUNYARD_DATABASE_URL": database, "RUNYARD_SERVER_ID": name,
                    "RUNYARD_LEASE_S": "1.5", **env}  # fmt: skip
        return start_server(jobs, capacity=3, data_dir=tmp / name, env=settings)

    return {name: one(name) for name in "abc"}


def attempts_by_run(database: str) -> dict[str, list[tuple]]:
    with psycopg.connect(database) as conn:
        rows = conn.execute(
            "SELECT run_id, number, host, state, outcome, started_at, ended_at FROM attempts "
            "ORDER BY run_id, number"
        ).fetchall()
    found: dict[str, list[tuple]] = defaultdict(list)
    for row in rows:
        found[row[0]].append(row[1:])
    return found


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = peak = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        now += step
        peak = max(peak, now)
    return peak


@pytest.mark.timeout(180)
def test_a_thousand_runs_on_three_servers_each_run_once_within_capacity(
    start_server, cluster_jobs, database, tmp_path
) -> None:
    servers = start_cluster(start_server, cluster_jobs, database, tmp_path)
    clients = [web.Client(base_url=s.url, timeout=30) for s in servers.values()]
    ids = []
    for http in itertools.islice(itertools.cycle(clients), 1000):  # round robin
        ids.append(http.post("/v1/runs", json={"job": "quick"}).json()["id"])

    def all_done() -> bool:
        with psycopg.connect(database) as conn:
            (left,) = conn.execute(
                "SELECT count(*) FROM runs WHERE state NOT IN ('succeeded', 'failed')"
            ).fetchone()
        return left == 0

    wait_for(all_done, timeout=150, what="1000 runs to end")
    with psycopg.connect(database) as conn:
        states = dict(conn.execute("SELECT state, count(*) FROM runs GROUP BY state").fetchall())
    assert states == {"succeeded": 1000}
    attempts = attempts_by_run(database)
    assert sorted(attempts) == sorted(ids)
    assert all(len(a) == 1 for a in attempts.values())  # each executed exactly once
    per_host: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for _, host, _, _, started, ended in (a[0] for a in attempts.values()):
        per_host[host].append((started, ended))
    assert set(per_host) == {"a", "b", "c"}  # every server took work from the one queue
    assert max(most_at_once(iv) for iv in per_host.values()) <= 3  # capacity, per server
    for http in clients:
        http.close()


@pytest.mark.timeout(120)
def test_a_stream_on_one_server_delivers_a_log_written_on_another(
    start_server, cluster_jobs, database, tmp_path
) -> None:
    servers = start_cluster(start_server, cluster_jobs, database, tmp_path)
    with web.Client(base_url=servers["a"].url, timeout=30) as a:
        ids = [a.post("/v1/runs", json={"job": "talk"}).json()["id"] for _ in range(9)]
        on_c = wait_for(lambda: next((i for i in ids if _host(database, i) == "c"), None),
                        what="a run executing on server c")  # fmt: skip
        text = []
        with a.stream("GET", f"/v1/runs/{on_c}/logs/stream") as resp:
            assert resp.headers["x-runyard-served-by"] == "c"
            event = None
            for line in resp.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "log":
                    text.append(line[6:])
                elif line.startswith("data: ") and event == "end":
                    assert '"succeeded"' in line
                    break
    whole = web.get(f"{servers['c'].url}/v1/runs/{on_c}/logs").text
    assert whole.splitlines() == [f"line {i}" for i in range(1, LOG_LINES + 1)]
    assert [t for t in text if t] == whole.splitlines()  # every line, once, in order
    # the same run's files through the third server: a byte range and its artifact listing
    part = web.get(f"{servers['b'].url}/v1/runs/{on_c}/logs", params={"limit": 7})
    assert part.text == "line 1\n" and part.headers["x-runyard-served-by"] == "c"
    assert web.get(f"{servers['b'].url}/v1/runs/{on_c}/artifacts").status_code == 200


def _host(database: str, run_id: str) -> str | None:
    with psycopg.connect(database) as conn:
        row = conn.execute(
            "SELECT host FROM attempts WHERE run_id = %s AND state = 'running'", (run_id,)
        ).fetchone()
    return row[0] if row else None


@pytest.mark.timeout(120)
def test_host_loss_retries_elsewhere_and_the_returning_server_changes_nothing(
    start_server, cluster_jobs, database, tmp_path
) -> None:
    servers = start_cluster(start_server, cluster_jobs, database, tmp_path)
    with web.Client(base_url=servers["a"].url, timeout=30) as a:
        ids = [a.post("/v1/runs", json={"job": "nap"}).json()["id"] for _ in range(9)]
    on_b = wait_for(lambda: [i for i in ids if _host(database, i) == "b"] or None,
                    what="runs executing on server b")  # fmt: skip
    b = servers["b"]
    b.stop(signal.SIGKILL)  # the host is lost: the server, its supervisor, its programs
    kill_everything(b.data_dir)

    def all_succeeded() -> bool:
        with psycopg.connect(database) as conn:
            states = {s for (s,) in conn.execute("SELECT state FROM runs")}
        return states == {"succeeded"}

    wait_for(all_succeeded, timeout=60, what="every run to succeed after the host loss")
    before = attempts_by_run(database)
    for run_id in on_b:
        first, *rest = before[run_id]
        assert first[1] == "b" and first[2] == "lost" and first[3] == "lost"
        assert rest[-1][1] in {"a", "c"} and rest[-1][2] == "exited"  # retried elsewhere

    with psycopg.connect(database) as conn:
        (old_token,) = conn.execute("SELECT token FROM servers WHERE id = 'b'").fetchone()
    b.start()  # the same identity and data directory, after its lease expired
    with psycopg.connect(database) as conn:
        (token, beat) = conn.execute(
            "SELECT token, heartbeat_at FROM servers WHERE id = 'b'"
        ).fetchone()
    assert token != old_token  # a new life: nothing of the old one is b's to write

    def beat_again() -> bool:
        with psycopg.connect(database) as conn:
            (now_beat,) = conn.execute("SELECT heartbeat_at FROM servers WHERE id = 'b'").fetchone()
        return now_beat > beat

    wait_for(beat_again, what="b's first heartbeat after its restart")
    assert attempts_by_run(database) == before  # recovery and heartbeat overwrote nothing
    assert all_succeeded()


@pytest.mark.timeout(120)
def test_schedules_fire_once_per_due_time_with_three_servers(
    start_server, cluster_jobs, database, tmp_path
) -> None:
    servers = start_cluster(start_server, cluster_jobs, database, tmp_path)
    made = web.post(f"{servers['b'].url}/v1/schedules",
                      json={"job": "quick", "interval_s": 1, "overlap": "allow"})  # fmt: skip
    assert made.status_code == 201
    schedule = made.json()["id"]

    def leader() -> str | None:
        for name, s in servers.items():
            alive = s.proc is not None and s.proc.poll() is None
            if alive and web.get(f"{s.url}/health").json()["scheduler"]["status"] == "running":
                return name
        return None

    def fired(at_least: int) -> list[float] | None:
        with psycopg.connect(database) as conn:
            rows = conn.execute(
                "SELECT created_at FROM runs WHERE schedule_id = %s ORDER BY created_at",
                (schedule,),
            ).fetchall()
        return [r[0] for r in rows] if len(rows) >= at_least else None

    first = wait_for(leader, what="a scheduler leader")
    wait_for(lambda: fired(4), timeout=30, what="four firings")
    servers[first].stop()  # the leader goes: another takes over
    times = wait_for(lambda: fired(8), timeout=60, what="four more firings after failover")
    second = wait_for(leader, what="a new scheduler leader")
    assert second != first
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) > 0.5  # one run per due time (one second apart), never two
    with psycopg.connect(database) as conn:
        (count,) = conn.execute(
            "SELECT fire_count FROM schedules WHERE id = %s", (schedule,)
        ).fetchone()
    assert count == len(fired(1) or [])  # every firing made exactly one run


@pytest.mark.timeout(120)
def test_a_cancel_sent_to_any_server_stops_the_run_where_it_runs(
    start_server, cluster_jobs, database, tmp_path
) -> None:
    """Accepted (202) and then nothing: the server asked flagged the run and told its own
    supervisor, which did not have it; the program ran on to its end."""
    servers = start_cluster(start_server, cluster_jobs, database, tmp_path)
    ids = [web.post(f"{servers['a'].url}/v1/runs", json={"job": "long"}).json()["id"]
           for _ in range(6)]  # fmt: skip
    hosts = wait_for(lambda: (h := {i: _host(database, i) for i in ids}) and all(h.values())
                     and h, what="every run running")  # fmt: skip
    assert len(set(hosts.values())) > 1  # spread over the servers
    for run_id, host in hosts.items():
        other = next(name for name in "abc" if name != host)
        resp = web.post(f"{servers[other].url}/v1/runs/{run_id}/cancel")
        assert resp.status_code == 202, resp.text
    for run_id in ids:
        wait_for(lambda r=run_id: web.get(f"{servers['a'].url}/v1/runs/{r}").json()["state"]
                 == "cancelled", what=f"run {run_id} cancelled")  # fmt: skip


@pytest.mark.timeout(120)
def test_a_paused_scheduler_leader_is_replaced_and_stands_by_when_back(
    start_server, cluster_jobs, database, tmp_path
) -> None:
    """A probe: a leader paused (or cut off, its session half open) kept the advisory lock,
    and no schedule fired until it came back; the others stood by and reported ready."""
    servers = start_cluster(start_server, cluster_jobs, database, tmp_path)

    def status(name: str) -> str:
        return str(web.get(f"{servers[name].url}/health").json()["scheduler"]["status"])

    first = wait_for(lambda: next((n for n in servers if status(n) == "running"), None),
                     what="a scheduler leader")  # fmt: skip
    other = next(n for n in servers if n != first)
    made = web.post(f"{servers[other].url}/v1/schedules",
                    json={"job": "quick", "interval_s": 1, "overlap": "allow"})  # fmt: skip
    schedule = made.json()["id"]

    def fires() -> int:
        with psycopg.connect(database) as conn:
            (n,) = conn.execute(
                "SELECT count(*) FROM runs WHERE schedule_id = %s", (schedule,)
            ).fetchone()
        return int(n)

    wait_for(lambda: fires() >= 2, timeout=30, what="firings")
    assert servers[first].proc is not None
    os.kill(servers[first].proc.pid, signal.SIGSTOP)
    try:
        paused_at = fires()
        # silent for a lease (1.5 s): replaced, and the schedule fires on meanwhile
        wait_for(lambda: fires() >= paused_at + 4, timeout=30, what="firings while paused")
        assert any(status(n) == "running" for n in servers if n != first)
    finally:
        os.kill(servers[first].proc.pid, signal.SIGCONT)
    wait_for(lambda: status(first) == "standby", timeout=30, what="the old leader to stand by")
    leaders = [n for n in servers if status(n) == "running"]
    assert len(leaders) == 1 and leaders != [first]
