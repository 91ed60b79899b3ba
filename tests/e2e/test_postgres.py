"""The server end to end on the machine's PostgreSQL instead of SQLite."""

from __future__ import annotations

import psycopg
import pytest

from runyard.models import RunState

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
