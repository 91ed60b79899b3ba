"""HEAD wherever GET is (RFC 9110 9.1): `curl -I`, download tools and monitors that check a
health route with HEAD were told 405, as if the server had no such path. A stream's HEAD ends
with its headers, its producer stopped (the leak check of every e2e test holds it to that)."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests import web
from tests.support import wait_for

pytestmark = pytest.mark.e2e

# stable between two requests: the same headers either way
STABLE = ["/health/live", "/v1/jobs", "/v1/jobs/true", "/v1/runs/{done}", "/v1/runs?limit=5",
          "/v1/runs/{done}/artifacts"]  # fmt: skip
# answers that move from one request to the next (times, counters): the status alone
MOVING = ["/health", "/health/ready", "/metrics", "/v1/me"]


def test_a_get_route_answers_head_with_its_headers_and_no_body(
    start_server, write_job, jobs_dir: Path
) -> None:
    write_job("true", 'command = ["true"]\n')
    server = start_server(jobs_dir)
    with web.Client(base_url=server.url, timeout=30) as client:
        done = client.post("/v1/runs", json={"job": "true"}, headers={"prefer": "wait=30"})
        assert done.json()["state"] == "succeeded", done.text
        for template in STABLE:
            path = template.format(done=done.json()["id"])
            got, head = client.get(path), client.head(path)
            assert (got.status_code, head.status_code) == (200, 200), (path, head.text)
            assert head.content == b"", path
            for name in ("content-type", "content-length", "x-content-type-options"):
                assert head.headers.get(name) == got.headers.get(name), (path, name)
            assert int(head.headers["content-length"]) == len(got.content) > 0, path
        for path in MOVING:
            head = client.head(path)
            assert head.status_code == 200 and head.content == b"", (path, head.status_code)
        gone = client.head("/v1/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV")
        assert gone.status_code == 404, gone.status_code
        assert client.head("/v1/nowhere").status_code == 404


def _watchers(url: str) -> float:
    for line in web.get(f"{url}/metrics").text.splitlines():
        if line.startswith("runyard_stream_watchers "):
            return float(line.split()[1])
    raise AssertionError("no runyard_stream_watchers in /metrics")


def test_a_streams_head_ends_with_its_headers_and_frees_the_connection(
    start_server, write_job, jobs_dir: Path
) -> None:
    """Raw keep-alive: each HEAD must end with its headers, even a stream with nothing to
    send yet (events past the last one, the log of a run still queued): it ended with the
    stream's first piece, and the next request on the connection waited for the heartbeat,
    set past any test's life here, the stream held for nobody meanwhile (a probe)."""
    write_job("hold", 'command = ["sh", "-c", "echo started; sleep 60"]\nkill_grace_s = 0\n')
    server = start_server(jobs_dir, capacity=1, env={"RUNYARD_HEARTBEAT_S": "3600"})
    url = urlsplit(server.url)
    # a hang guard: a HEAD that does not end would hold the next request for the heartbeat
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    ids = []
    try:
        for _ in range(2):  # the second queued behind the first (capacity 1)
            conn.request("POST", "/v1/runs", body=b'{"job": "hold"}',
                         headers={"content-type": "application/json"})  # fmt: skip
            resp = conn.getresponse()
            ids.append(json.loads(resp.read())["id"])
            assert resp.status == 202
        running, queued = ids
        streams = [
            (f"/v1/runs/{running}/events", {}),
            (f"/v1/runs/{running}/events", {"Last-Event-ID": "1000"}),  # nothing new yet
            (f"/v1/runs/{running}/logs/stream", {}),
            (f"/v1/runs/{queued}/logs/stream", {}),  # not started: nothing to send
            ("/v1/events", {}),
        ]
        for path, headers in streams:
            conn.request("HEAD", path, headers=headers)
            resp = conn.getresponse()
            assert resp.status == 200, (path, resp.status)
            assert resp.getheader("content-type", "").startswith("text/event-stream"), path
            assert resp.read() == b"", path
            conn.request("GET", "/health/live")  # the same connection, right after
            after = conn.getresponse()
            assert (after.status, after.read()) == (200, b'{"status":"ok"}'), (path, headers)
            wait_for(lambda: _watchers(server.url) == 0, timeout=20, what=f"{path} to stop")
    finally:
        conn.close()
    with web.Client(base_url=server.url, timeout=30) as client:
        for run_id in ids:
            assert client.post(f"/v1/runs/{run_id}/cancel").status_code in (200, 202)
