"""The server end to end on the machine's PostgreSQL instead of SQLite."""

from __future__ import annotations

import psycopg
import pytest

from runyard.models import RunState
from runyard.store.postgres import POOL_WAIT_S
from tests.support import wait_for

pytestmark = pytest.mark.e2e


def test_runs_on_postgres(start_server, database) -> None:
    server = start_server(env={"RUNYARD_DATABASE_URL": database})
    with server.client() as c:
        ok = c.submit("simulate", {"ticks": 100})
        bad = c.submit("fail", {"code": 5})
        batch = c.batch("true", iterations=3)
        assert server.wait_run(c, ok.id).state is RunState.SUCCEEDED
        assert server.wait_run(c, bad.id).exit_code == 5
        assert len(c.runs(batch=batch.id).runs) == 3
        events = [e for e in c.stream_events(ok.id) if isinstance(e, dict)]
        assert events[-1]["data"]["to"] == "succeeded"
    with psycopg.connect(database) as conn:
        (count,) = conn.execute("SELECT count(*) FROM runs").fetchone()
    assert count == 5  # the runs are in PostgreSQL, not in a SQLite file
    assert not (server.data_dir / "runyard.db").exists()


def test_a_database_that_drops_every_connection_costs_no_request(start_server, database) -> None:
    """A restart, a failover or an administrator's pg_terminate_backend drops every
    connection of the pool at once: each was found broken only by the next request to use it,
    and answered 500 (`AdminShutdown`), as were the dispatcher's and the exits' writes. A
    transaction dropped before its commit wrote nothing: it is run again on a new one."""
    server = start_server(env={"RUNYARD_DATABASE_URL": database})
    name = database.rsplit("/", 1)[1]
    with server.client() as c:
        before = [c.submit("true").id for _ in range(5)]  # the pool holds connections now
        for run_id in before:
            assert server.wait_run(c, run_id).state is RunState.SUCCEEDED
        for _ in range(3):
            with psycopg.connect(database.rsplit("/", 1)[0] + "/test", autocommit=True) as conn:
                (dropped,) = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,),
                ).fetchone()
            assert dropped >= 1
            resp = c.http.post("/v1/runs", json={"job": "true"}, headers={"prefer": "wait=30"})
            assert resp.status_code == 200, resp.text  # neither a 500 nor a 503
            assert resp.json()["state"] == "succeeded"  # stored, dispatched, ended: recorded
            assert c.http.get("/v1/runs", params={"limit": 50}).status_code == 200
    log = server.log_path.read_text()
    assert "AdminShutdown" not in log and "unhandled_error" not in log


def test_a_database_that_refuses_connections_is_a_prompt_503_then_forgotten(
    start_server, database
) -> None:
    """No connection to be had (PostgreSQL down, restarting, refusing this database): a
    request is answered 503 `store-unreachable` once the pool's wait ends — it waited 30 s,
    past a lease, and clients with shorter timeouts had no answer at all — readiness says so,
    and the first request after the database takes connections again succeeds."""
    server = start_server(env={"RUNYARD_DATABASE_URL": database})
    name = database.rsplit("/", 1)[1]
    admin = database.rsplit("/", 1)[0] + "/test"
    with server.client() as c:
        assert server.wait_run(c, c.submit("true").id).state is RunState.SUCCEEDED
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
        try:
            # answered once the pool's wait is over, not 30 s later: a bound, not a speed
            resp = c.http.post("/v1/runs", json={"job": "true"}, timeout=4 * POOL_WAIT_S)
            assert resp.status_code == 503, resp.text
            assert resp.json()["type"].endswith("store-unreachable")
            assert "Retry-After" in resp.headers
            wait_for(
                lambda: c.http.get("/health/ready").status_code == 503,
                what="readiness to say the database is unreachable",
            )
            wait_for(lambda: "heartbeat_failed" in server.log_path.read_text(),
                     what="a membership heartbeat to fail")  # fmt: skip
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        wait_for(lambda: c.http.get("/health/ready").status_code == 200, what="ready again")
        assert server.wait_run(c, c.submit("true").id).state is RunState.SUCCEEDED
    traced = [line for line in server.log_path.read_text().splitlines() if '"exception"' in line]
    assert traced == []  # a bad day, said in lines (the heartbeat's was a traceback each time)
