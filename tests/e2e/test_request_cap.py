"""At most RUNYARD_MAX_REQUESTS requests at once (api/middleware/request_cap.py): past it, an
answer at once saying so, holding nothing; the health routes answered all the same. A real
server; the requests held open are waits for runs that do not end until the test ends them."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import psutil
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests import web
from tests.support import processes_of, wait_for

pytestmark = pytest.mark.e2e
RUN_ID = "01NOSUCHRUN0000000000000000"  # refused before its run is looked for


@pytest.fixture
def jobs(write_job, jobs_dir: Path) -> Path:
    write_job("hold", 'command = ["sleep", "600"]\n')
    return jobs_dir


def stored_runs(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "runyard.db") as db:
        (count,) = db.execute("SELECT count(*) FROM runs").fetchone()
    return int(count)


def test_a_request_past_the_cap_is_refused_at_once_and_the_health_routes_are_not(
    start_server, jobs
) -> None:
    server = start_server(jobs, env={"RUNYARD_MAX_REQUESTS": "2"})
    answers: list[int] = []

    def hold() -> None:  # a request in progress until its run ends
        resp = web.post(f"{server.url}/v1/runs", json={"job": "hold"},
                        headers={"prefer": "wait=120"}, timeout=130)  # fmt: skip
        answers.append(resp.status_code)

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for t in holders:
        t.start()
    # both stored, so both are waiting (asked without a request: that would be a third)
    wait_for(lambda: stored_runs(server.data_dir) == 2, what="two waits in progress")
    wait_for(lambda: len(processes_of(server.data_dir)) == 2, what="their programs running")
    refused = web.get(f"{server.url}/v1/jobs", timeout=10)
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["connection"] == "close"
    problem = refused.json()
    assert problem["type"].endswith("out-of-resources")
    assert "RUNYARD_MAX_REQUESTS" in problem["detail"]
    assert web.get(f"{server.url}/health/live", timeout=10).status_code == 200
    assert web.get(f"{server.url}/health/ready", timeout=10).status_code == 200
    assert web.get(f"{server.url}/metrics", timeout=10).status_code == 200  # not blind now
    # a WebSocket past the cap: the same problem, as its handshake's answer (a close alone
    # reached the client as a bare 403)
    with pytest.raises(InvalidStatus) as info:
        connect(f"ws://127.0.0.1:{server.port}/v1/runs/{RUN_ID}/ws", open_timeout=10)
    answer = info.value.response
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert json.loads(answer.body)["type"].endswith("out-of-resources")
    metrics = web.get(f"{server.url}/metrics", timeout=10).text
    assert "runyard_http_requests_refused_total 2.0" in metrics  # the GET and the WebSocket
    for proc in processes_of(server.data_dir):  # their runs end: the waits are answered
        proc.kill()
    for t in holders:
        t.join(60)
    assert answers == [200, 200]
    wait_for(lambda: web.get(f"{server.url}/v1/jobs", timeout=10).status_code == 200,
             what="answered again")  # fmt: skip
    doc = web.get(f"{server.url}/openapi.json", timeout=10).json()  # as strict as the server
    assert "503" in doc["paths"]["/v1/jobs"]["get"]["responses"]
    assert "503" not in doc["paths"]["/health/live"]["get"]["responses"]


def test_the_cap_refuses_a_flood_without_holding_its_connections(start_server, jobs) -> None:
    """Many more requests than the cap at once: those past it are closed as they are
    answered, so the server's descriptors stay near what the cap allows."""
    server = start_server(jobs, env={"RUNYARD_MAX_REQUESTS": "1"})
    holder = threading.Thread(
        target=lambda: web.post(
            f"{server.url}/v1/runs",
            json={"job": "hold"},
            headers={"prefer": "wait=120"},
            timeout=130,
        ),
    )
    holder.start()
    wait_for(lambda: stored_runs(server.data_dir) == 1, what="the wait in progress")
    wait_for(lambda: len(processes_of(server.data_dir)) == 1, what="its program running")
    assert server.proc is not None
    statuses = []
    with web.Client(timeout=10) as http:
        for _ in range(50):
            statuses.append(http.get(f"{server.url}/v1/jobs").status_code)
    assert statuses == [503] * 50
    # each refused connection was closed by the server (`connection: close`)
    fds = psutil.Process(server.proc.pid).num_fds()
    assert fds < 100, fds
    for proc in processes_of(server.data_dir):
        proc.kill()
    holder.join(60)
