"""A `Prefer: wait` submission holds its request until the run ends, up to the wait asked; a
client that leaves meanwhile ends the wait at once (it used to hold the request, its task and
its timer for the whole wait). Its run goes on: it was accepted."""

from __future__ import annotations

import json
import socket

import pytest

from tests import web
from tests.support import ServerProcess, wait_for

pytestmark = pytest.mark.e2e
WAIT_S = 600  # what the clients ask for; the test waits for far less than that


def _request_line(server: ServerProcess, request_id: str) -> dict[str, object] | None:
    for line in server.log_path.read_text().splitlines():
        if line.startswith("{") and f'"{request_id}"' in line:
            entry = json.loads(line)
            if entry.get("event") == "request":
                return dict(entry)
    return None


@pytest.mark.parametrize(
    "extra",
    [
        b"",  # the submit lane
        b"Idempotency-Key: left-1\r\n",  # the declared route
    ],
)
def test_a_client_that_leaves_ends_its_wait_and_its_run_goes_on(start_server, extra: bytes) -> None:
    server = start_server(env={"RUNYARD_MAX_WAIT_S": str(WAIT_S)})
    body = b'{"job": "sleeper", "params": {"seconds": 3600}}'
    request_id = f"left-{len(extra)}"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Prefer: wait=%d\r\nX-Request-ID: %s\r\n%sContent-Length: %d\r\n\r\n%s"
            % (WAIT_S, request_id.encode(), extra, len(body), body)
        )
        run = wait_for(
            lambda: web.get(f"{server.url}/v1/runs").json()["runs"], what="the run stored"
        )[0]
        assert _request_line(server, request_id) is None  # still waiting
    # the client is gone: the request ends now, not after WAIT_S
    line = wait_for(lambda: _request_line(server, request_id), what="the request to end")
    assert line["route"] == "/v1/runs"
    assert web.get(f"{server.url}/v1/runs/{run['id']}").json()["state"] in ("queued", "running")
    web.post(f"{server.url}/v1/runs/{run['id']}/cancel")


@pytest.mark.parametrize("keyed", [False, True])  # the submit lane, the declared route
def test_several_prefer_headers_are_one_list(start_server, keyed: bool) -> None:
    """RFC 7240: preferences may come in several Prefer headers; `wait` counts wherever it
    is (only the first header counted before), and the limit is on them all together."""
    server = start_server()
    body = b'{"job": "true"}'

    def submit(key: bytes, *prefer: bytes) -> bytes:
        headers = b"".join(b"Prefer: %s\r\n" % p for p in prefer)
        if keyed:
            headers += b"Idempotency-Key: %s\r\n" % key
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(
                b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\n%sContent-Length: %d\r\n\r\n%s" % (headers, len(body), body)
            )
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        return answer

    waited = submit(b"k-1", b"respond-async", b"wait=30")
    assert waited.startswith(b"HTTP/1.1 200"), waited[:300]
    assert b"preference-applied: wait=30" in waited.lower()
    assert b'"state":"succeeded"' in waited
    too_long = submit(b"k-2", b"wait=1, " + b"x" * 150, b"y" * 60)
    assert too_long.startswith(b"HTTP/1.1 422"), too_long[:300]
    assert b"Prefer" in too_long
