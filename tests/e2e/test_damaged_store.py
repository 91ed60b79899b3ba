"""A database whose pages are damaged past what start-up reads: the server starts, and every
request that reaches the damage is a 503 naming the file and what to do (not a 500), its
readiness says so from then on (a probe write to the header page would go through), and
what does not reach the damage is served as before."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests import web
from tests.support import EXAMPLE_JOBS, wait_for

DAMAGED = "is damaged (database disk image is malformed)"


def _damage_index(db: Path, name: str) -> None:
    """The root page of index `name` overwritten: no valid b-tree page starts with 0xff."""
    with sqlite3.connect(db) as conn:
        page = conn.execute("SELECT rootpage FROM sqlite_schema WHERE name = ?", (name,))
        root = page.fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with db.open("r+b") as fh:
        fh.seek((root - 1) * size)
        fh.write(b"\xff" * size)


def test_damaged_pages_met_while_serving_are_named_and_kept_in_readiness(start_server) -> None:
    server = start_server(EXAMPLE_JOBS)
    with server.client() as client:
        done = server.wait_run(client, client.submit("true").id)
    server.stop()
    db = server.data_dir / "runyard.db"
    _damage_index(db, "runs_by_job")  # every new run writes it; reading one by id does not

    server = start_server(EXAMPLE_JOBS, data_dir=server.data_dir)
    refused = web.post(f"{server.url}/v1/runs", json={"job": "true"}, timeout=10)
    assert refused.status_code == 503, refused.text
    problem = refused.json()
    assert problem["type"].endswith("storage-io")
    assert f"the database {db} {DAMAGED}" in problem["detail"]
    assert "restore it from a backup" in problem["detail"]

    def not_ready() -> dict[str, str] | None:  # readiness is looked at about once a second
        answer = web.get(f"{server.url}/health/ready", timeout=10)
        return answer.json()["checks"] if answer.status_code == 503 else None

    assert DAMAGED in wait_for(not_ready, what="readiness to say so")["database"]
    assert web.post(f"{server.url}/v1/runs", json={"job": "true"}, timeout=10).status_code == 503
    assert not_ready()  # it does not heal

    kept = web.get(f"{server.url}/v1/runs/{done.id}", timeout=10)
    assert kept.status_code == 200 and kept.json()["state"] == "succeeded"


def test_a_damaged_queued_run_fails_alone_and_the_queue_moves_on(start_server) -> None:
    """One run's row rewritten behind the server's back (its params no longer JSON): its claim
    fails it, naming the column, and the runs behind it still start; listings leave it out,
    and reading it says what is wrong with it."""
    server = start_server(EXAMPLE_JOBS, capacity=1)
    with server.client() as client:
        holder = client.submit("sleeper", {"seconds": 600}).id  # holds the one slot
        wait_for(lambda: client.run(holder).state.value == "running", what="the holder runs")
        damaged, behind = client.submit("true").id, client.submit("true").id
        with sqlite3.connect(server.data_dir / "runyard.db") as conn:
            conn.execute("UPDATE runs SET params = 'not json' WHERE id = ?", (damaged,))
        client.cancel(holder)  # its end claims the damaged run, then the one behind it
        assert server.wait_run(client, behind).state.value == "succeeded"

        listed = web.get(f"{server.url}/v1/runs", timeout=10)
        assert listed.status_code == 200, listed.text
        ids = [r["id"] for r in listed.json()["runs"]]
        assert behind in ids and holder in ids and damaged not in ids

    read = web.get(f"{server.url}/v1/runs/{damaged}", timeout=10)
    assert read.status_code == 500
    problem = read.json()
    assert problem["type"].endswith("record-damaged")
    assert f"run {damaged} is damaged (params: not JSON)" in problem["detail"]
    with sqlite3.connect(server.data_dir / "runyard.db") as conn:
        state, reason = conn.execute(
            "SELECT state, reason FROM runs WHERE id = ?", (damaged,)
        ).fetchone()
    assert state == "failed" and "(params: not JSON)" in reason
    assert web.get(f"{server.url}/health/ready", timeout=10).status_code == 200
