"""Request ids, structured logs and Prometheus metrics, read back the way an operator would."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from runyard.models import RunState
from tests import web

pytestmark = pytest.mark.e2e

JOBS = {
    "ok": 'command = ["true"]\n',
    "bad": 'command = ["sh", "-c", "exit 3"]\n',
    "flaky": 'command = ["sh", "-c", "[ $RUNYARD_ATTEMPT -ge 2 ]"]\nmax_attempts = 2\n'
    "retry_on = [1]\n[backoff]\nbase_s = 0.05\njitter = 0\n",
}


@pytest.fixture
def server(start_server, write_job, jobs_dir):
    for name, text in JOBS.items():
        write_job(name, text)
    return start_server(jobs_dir)


def scrape(server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = web.get(f"{server.url}/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_with_runs(server) -> None:
    before = scrape(server)
    with server.client() as c:
        runs = [c.submit("ok"), c.submit("bad"), c.submit("flaky")]
        done = [server.wait_run(c, r.id) for r in runs]
    assert [d.state for d in done] == [RunState.SUCCEEDED, RunState.FAILED, RunState.SUCCEEDED]
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("runyard_run_transitions_total", job="ok", to="succeeded") == 1
    assert delta("runyard_run_transitions_total", job="bad", to="failed") == 1
    assert delta("runyard_run_transitions_total", job="flaky", to="running") == 2
    assert delta("runyard_run_retries_total", job="flaky") == 1
    assert delta("runyard_http_requests_total", method="POST", route="/v1/runs", status="202") == 3
    assert delta("runyard_run_queue_wait_seconds_count", job="ok") == 1
    assert delta("runyard_run_duration_seconds_count", job="bad", state="failed") == 1
    assert value(after, "runyard_store_operation_seconds_count", operation="insert_run") >= 3
    assert value(after, "runyard_runs_running", job="ok") == 0


def test_label_sets_stay_bounded(server) -> None:
    with web.Client(base_url=server.url) as http:
        for _ in range(1000):
            assert http.get(f"/v1/runs/{uuid.uuid4().hex}").status_code == 404
    samples = scrape(server)
    routes = {
        dict(labels).get("route") for (name, labels) in samples if name.startswith("runyard_http")
    }
    assert "/v1/runs/{run_id}" in routes
    assert len(routes) < 10  # templates, never raw paths or run ids
    assert value(samples, "runyard_http_requests_total", method="GET", route="/v1/runs/{run_id}",
                 status="404") == 1000  # fmt: skip


def log_lines(server) -> list[dict]:
    out = []
    for line in Path(server.log_path).read_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_request_id_kept_or_made_and_logged(server) -> None:
    kept = web.get(f"{server.url}/v1/jobs", headers={"X-Request-ID": "trace-abc.123"})
    assert kept.headers["x-request-id"] == "trace-abc.123"
    made = web.get(f"{server.url}/v1/jobs", headers={"X-Request-ID": "bad id with spaces"})
    assert made.headers["x-request-id"] != "bad id with spaces"
    assert len(made.headers["x-request-id"]) == 32
    missing = web.get(f"{server.url}/v1/runs/nope")
    assert missing.headers["x-request-id"]
    with server.client() as c:
        run = c.submit("bad")
        server.wait_run(c, run.id)
    lines = log_lines(server)
    request = [
        e for e in lines if e.get("event") == "request" and e.get("request_id") == "trace-abc.123"
    ]
    assert len(request) == 1
    assert request[0]["method"] == "GET"
    assert request[0]["route"] == "/v1/jobs"
    assert request[0]["status"] == 200
    assert request[0]["duration_ms"] >= 0
    assert request[0]["principal"] == "anonymous"
    notfound = [e for e in lines if e.get("request_id") == missing.headers["x-request-id"]]
    assert notfound[0]["status"] == 404
    life = [e for e in lines if e.get("event") == "run_transition" and e.get("run_id") == run.id]
    assert [(e["from"], e["to"]) for e in life] == [("queued", "running"), ("running", "failed")]
    assert life[-1]["job"] == "bad"
    assert life[-1]["attempt"] == 1
    assert life[-1]["reason"] == "exit code 3"


def test_status_shows_configuration_without_secrets(server) -> None:
    body = web.get(f"{server.url}/v1/status").json()
    assert body["version"]
    assert body["config"]["capacity"] == 4
    assert sorted(body["jobs"]["declared"]) == ["bad", "flaky", "ok"]
    assert body["executor"]["supervisor_connected"] is True
    assert "token" not in json.dumps(body).lower()


def test_the_queue_and_running_gauges_read_zero_rather_than_vanish(server) -> None:
    """A probe: `runyard_runs_queued` and `runyard_runs_running` had no series once nothing
    was queued or running, so `sum(...)` in an alert read no data rather than 0; and, a
    review found, whenever nothing had scanned the jobs in the last second (the registry's
    refresh): the server left alone past that before it is scraped."""
    time.sleep(1.5)
    samples = scrape(server)
    for name in ("runyard_runs_queued", "runyard_runs_running"):
        for job in JOBS:
            assert samples.get((name, (("job", job),))) == 0.0, (name, job, samples.keys())
