"""Faults injected at every durable write (ENOSPC, EIO), switched on and off at runtime.

For each: reads keep working, writes are refused (507 full, 503 I/O) naming the cause, the
supervisor survives, readiness says what is wrong while it lasts, and once the fault clears
the queue moves again with no restart and no run left `running` without a process.
"""

from __future__ import annotations

import os

import httpx
import pytest

from runyard.models import RunState
from tests.support import ServerProcess, processes_of, supervisors_of, wait_for

pytestmark = pytest.mark.e2e

ARMED = {"RUNYARD_FAILPOINTS": "none"}  # armed for switching, no fault yet


def set_faults(server: ServerProcess, spec: str) -> None:
    """Switch the faults in force at once, in the server and its supervisor (both re-read
    DATA_DIR/failpoints when it changes); "" clears them."""
    path = server.data_dir / "failpoints"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(spec or "none")
    os.replace(tmp, path)


def checks(server: ServerProcess) -> dict[str, str]:
    resp = httpx.get(f"{server.url}/health/ready")
    body = resp.json()
    assert (resp.status_code == 200) == (body["checks"] == {})
    return dict(body["checks"])


def ready_again(server: ServerProcess) -> None:
    wait_for(lambda: checks(server) == {}, what="ready again")


def supervisor_pid(server: ServerProcess) -> int:
    (sup,) = supervisors_of(server.data_dir)
    return sup.pid


def submit(server: ServerProcess, job: str, params: dict[str, object] | None = None) -> str:
    resp = httpx.post(f"{server.url}/v1/runs", json={"job": job, "params": params or {}})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def queue_moves(server: ServerProcess) -> None:
    """A new run goes through, and nothing is left `running` without a process."""
    with server.client() as c:
        done = server.wait_run(c, submit(server, "true"))
        assert done.state is RunState.SUCCEEDED, done.reason
        running = c.runs(state="running").runs
    assert running == [] or processes_of(server.data_dir)


@pytest.mark.parametrize(
    ("fault", "status", "slug"),
    [("enospc", 507, "storage-full"), ("eio", 503, "storage-io")],
)
def test_store_commit_fault_refuses_writes_keeps_reads_and_clears(
    start_server, fault: str, status: int, slug: str
) -> None:
    server = start_server(env=ARMED)
    with server.client() as c:
        before = server.wait_run(c, submit(server, "true"))
    set_faults(server, f"store_commit={fault}")
    resp = httpx.post(f"{server.url}/v1/runs", json={"job": "true"})
    assert resp.status_code == status
    problem = resp.json()
    assert problem["type"].endswith(slug)
    cause = "No space left on device" if fault == "enospc" else "Input/output error"
    assert cause in problem["detail"]
    assert "database" in problem["detail"]
    # reads keep working
    assert httpx.get(f"{server.url}/v1/runs/{before.id}").status_code == 200
    assert len(httpx.get(f"{server.url}/v1/runs").json()["runs"]) == 1  # nothing was stored
    wait_for(lambda: "store" in checks(server), what="readiness to name the store")
    assert cause in checks(server)["store"]
    set_faults(server, "")
    ready_again(server)
    queue_moves(server)
