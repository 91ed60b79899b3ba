"""Records other than runs rewritten behind the server's back (a probe, SQLite keeping
whatever a column is set to): a schedule whose params were no JSON stopped the server from
starting, one whose next fire time was text stopped the scheduler for every schedule, a
server's lease that was text stopped the start, a batch whose size was text made every batch
listing a 500, an attempt's host as a blob and an event whose data was no JSON made their
run's reads 500s. Each is that record's failure alone, named; the rest is served."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from tests import web
from tests.support import ServerProcess, open_gate, wait_for

pytestmark = pytest.mark.e2e

FAST = {"RUNYARD_SCHEDULE_MIN_INTERVAL_S": "0.1"}
# runs until the test opens its gate: the damage is done while it runs, whatever the load
GATE = 'command = ["sh", "-c", "until [ -e gate ]; do sleep 0.05; done"]\n'


def opened(server: ServerProcess, run_id: str) -> None:
    open_gate(server.data_dir, run_id, "gate")


def damage(server: ServerProcess, *statements: tuple[str, tuple[object, ...]]) -> None:
    with sqlite3.connect(server.data_dir / "runyard.db") as conn:
        for sql, args in statements:
            assert conn.execute(sql, args).rowcount == 1, sql


def schedule(server: ServerProcess, **body: object) -> str:
    made = web.post(f"{server.url}/v1/schedules", json={"job": "tick", **body}, timeout=10)
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def fires(server: ServerProcess, schedule_id: str) -> int:
    return int(web.get(f"{server.url}/v1/schedules/{schedule_id}").json()["fire_count"])


def test_damaged_schedules_and_lease_are_left_out_and_the_rest_starts_and_fires(
    start_server, write_job, jobs_dir: Path
) -> None:
    write_job("tick", 'command = ["true"]\n')
    server = start_server(jobs_dir, env=FAST)
    good = schedule(server, interval_s=0.2)
    bad_params = schedule(server, interval_s=3600)
    bad_time = schedule(server, interval_s=3600)
    full = schedule(server, interval_s=0.2)
    server.stop()
    damage(server,
           ("UPDATE schedules SET params = '{not json' WHERE id = ?", (bad_params,)),
           ("UPDATE schedules SET next_fire_at = 'soon' WHERE id = ?", (bad_time,)),
           ("UPDATE schedules SET fire_count = 9223372036854775807 WHERE id = ?", (full,)),
           ("UPDATE servers SET lease_expires_at = 'forever'", ()))  # fmt: skip

    restarted = time.time()
    server = start_server(jobs_dir, data_dir=server.data_dir, env=FAST)
    with sqlite3.connect(server.data_dir / "runyard.db") as conn:
        (previous,) = conn.execute("SELECT previous_expires_at FROM servers").fetchone()
    # the unreadable lease's life may still run: held to a whole lease from the new start
    assert isinstance(previous, float) and previous > restarted, previous
    listed = web.get(f"{server.url}/v1/schedules", timeout=10).json()["schedules"]
    assert [s["id"] for s in listed] == [good]
    before = fires(server, good)
    wait_for(lambda: fires(server, good) > before + 2, what="the sound schedule to fire on")
    health = web.get(f"{server.url}/health", timeout=10).json()
    assert health["scheduler"]["status"] != "stopped", health
    log = server.log_path.read_text()
    assert f"schedule {bad_params} is damaged (params: not JSON)" in log
    assert f"schedule {bad_time} is damaged (next_fire_at: not a time)" in log
    assert f"schedule {full} is damaged (fire_count: not a count (0 to 2^53))" in log
    assert "Traceback" not in log
    # left out, but not beyond reach: a DELETE removes it (and only once)
    assert web.delete(f"{server.url}/v1/schedules/{bad_params}", timeout=10).status_code == 204
    assert web.delete(f"{server.url}/v1/schedules/{bad_params}", timeout=10).status_code == 404


def test_a_damaged_batch_attempt_or_event_is_its_own_failure_alone(start_server) -> None:
    server = start_server()
    batches = []
    for _ in range(2):
        made = web.post(f"{server.url}/v1/batches", json={"job": "true", "iterations": 1})
        assert made.status_code in (201, 202), made.text
        batches.append(made.json()["id"])
    sound, damaged = batches
    with server.client() as client:
        run = client.submit("true").id
        assert server.wait_run(client, run).state.value == "succeeded"
    events = web.get(f"{server.url}/v1/runs/{run}/events", timeout=10)
    seqs = [line for line in events.text.splitlines() if line.startswith("id:")]
    damage(server,
           ("UPDATE batches SET size = 'lots' WHERE id = ?", (damaged,)),
           ("UPDATE attempts SET host = x'00ff', created_at = 'x', outcome = x'ff' "
            "WHERE run_id = ?", (run,)),
           ("UPDATE run_events SET data = '{bad' WHERE run_id = ? AND seq = 1",
            (run,)))  # fmt: skip

    listed = web.get(f"{server.url}/v1/batches", timeout=10)
    assert listed.status_code == 200, listed.text
    assert [b["id"] for b in listed.json()["batches"]] == [sound]
    read = web.get(f"{server.url}/v1/batches/{damaged}", timeout=10)
    assert read.status_code == 500 and read.json()["type"].endswith("record-damaged"), read.text
    assert f"batch {damaged} is damaged (size: not of its type)" in read.json()["detail"]

    got = web.get(f"{server.url}/v1/runs/{run}", timeout=10)
    assert got.status_code == 200, got.text
    (attempt,) = got.json()["attempts"]
    assert attempt["outcome"] is None and attempt["exit_code"] == 0
    events = web.get(f"{server.url}/v1/runs/{run}/events", timeout=10)
    assert events.status_code == 200, events.text
    left = [line for line in events.text.splitlines() if line.startswith("id:")]
    assert len(left) == len(seqs) - 1 and "id: 1" not in left, (seqs, left)
    assert "damaged_event_skipped" in server.log_path.read_text()


def test_a_run_whose_state_is_damaged_while_it_runs_fails_at_its_end(
    start_server, write_job, jobs_dir: Path
) -> None:
    """A probe: its end could not be written (the stored state no run's), so the slot was
    never given back, and readiness said `reconcile failed` for good."""
    write_job("gate", GATE)
    write_job("tick", 'command = ["true"]\n')
    server = start_server(jobs_dir, capacity=1)
    with server.client() as client:
        run = client.submit("gate").id
        wait_for(lambda: client.run(run).state.value == "running", what="it runs")
        damage(server, ("UPDATE runs SET state = 'zombie' WHERE id = ?", (run,)))
        opened(server, run)
        after = client.submit("tick").id  # waits for the one slot
        assert server.wait_run(client, after).state.value == "succeeded"
        ended = client.run(run)
    assert ended.state.value == "failed", ended
    assert ended.reason is not None and "'zombie' is no run's state" in ended.reason
    wait_for(lambda: web.get(f"{server.url}/health/ready", timeout=10).status_code == 200,
             what="readiness")  # fmt: skip


def test_a_runs_damaged_reference_or_retry_time_reads_as_unknown(start_server) -> None:
    """A probe: a blob for a run's batch id made every page of runs holding it a 500; a
    queued run's retry time as text was never claimed (SQLite sorts text above numbers), and
    the dispatcher's timer failed on it twice a second."""
    server = start_server(capacity=1)
    with server.client() as client:
        done = client.submit("true").id
        assert server.wait_run(client, done).state.value == "succeeded"
        holder = client.submit("sleeper", {"seconds": 600}).id
        wait_for(lambda: client.run(holder).state.value == "running", what="the holder runs")
        queued = client.submit("true").id
        damage(server,
               ("UPDATE runs SET batch_id = x'00ff' WHERE id = ?", (done,)),
               ("UPDATE runs SET not_before = 'soon' WHERE id = ?", (queued,)))  # fmt: skip
        listed = web.get(f"{server.url}/v1/runs", timeout=10)
        assert listed.status_code == 200, listed.text
        assert done in [r["id"] for r in listed.json()["runs"]]
        assert client.run(done).batch_id is None
        client.cancel(holder)  # its slot frees: the queued run's time reads as due
        assert server.wait_run(client, queued).state.value == "succeeded"
    assert "dispatch_failed" not in server.log_path.read_text()


def test_a_run_whose_event_number_is_damaged_while_it_runs_still_ends(
    start_server, write_job, jobs_dir: Path
) -> None:
    """A probe: an event's number rewritten as text numbered the next event 1 again (SQLite's
    max() takes text for the largest), refused as a duplicate: the run could not end."""
    write_job("gate", GATE)
    server = start_server(jobs_dir)
    with server.client() as client:
        run = client.submit("gate").id
        wait_for(lambda: client.run(run).state.value == "running", what="it runs")
        damage(server, ("UPDATE run_events SET seq = 'x' WHERE run_id = ? AND seq = 2", (run,)))
        opened(server, run)
        assert server.wait_run(client, run).state.value == "succeeded"
    events = web.get(f"{server.url}/v1/runs/{run}/events", timeout=10)
    assert events.status_code == 200 and '"to":"succeeded"' in events.text.replace(" ", "")
