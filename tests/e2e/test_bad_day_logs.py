"""A bad day is said, not traced: with the store refusing writes (a full disk) the server
keeps trying — the dispatcher every 0.5 s, an end heard, a reconcile pass — and says each in
one line naming the cause, the dispatcher once for the whole stretch and once when it is
over. It logged a traceback at every try, filling what was left of the disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runyard.models import RunState
from tests import web
from tests.e2e.test_failpoints import ARMED, checks, gated_jobs, ready_again, set_faults, submit
from tests.support import processes_of, wait_for

pytestmark = pytest.mark.e2e
__all__ = ["gated_jobs"]  # the fixture, used by name


def events(log: Path) -> list[dict[str, object]]:
    found = []
    for line in log.read_text().splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue  # not one of the server's JSON lines
    return found


def test_a_full_disk_is_said_in_lines_not_tracebacks(start_server, gated_jobs: Path) -> None:
    server = start_server(gated_jobs, env=ARMED)
    with server.client() as c:
        run_id = submit(server, "gated")
        wait_for(lambda: processes_of(server.data_dir), what="program running")
        set_faults(server, "store_commit=enospc")
        for _ in range(3):  # each refused, each waking the dispatcher, whose claim fails
            assert web.post(f"{server.url}/v1/runs", json={"job": "true"}).status_code == 507
        (server.data_dir / "runs" / run_id / "workspace" / "go").touch()  # its end: refused
        wait_for(lambda: "reconcile" in checks(server), what="readiness to say the end waits")
        wait_for(
            lambda: any(e.get("event") == "reconcile_retry" for e in events(server.log_path)),
            what="a reconcile pass retried on the full disk",
        )
        set_faults(server, "")
        assert server.wait_run(c, run_id).state is RunState.SUCCEEDED
    ready_again(server)
    said = events(server.log_path)
    traced = [e["event"] for e in said if "exception" in e]
    assert traced == []
    failed = [e for e in said if e.get("event") == "dispatch_failed"]
    assert len(failed) == 1, failed  # once for the stretch
    assert "No space left on device" in str(failed[0]["error"])
    assert any(e.get("event") == "dispatch_resumed" for e in said)
    ended = [e for e in said if e.get("event") == "exit_handling_failed"]
    assert ended and all("No space left on device" in str(e["error"]) for e in ended)
