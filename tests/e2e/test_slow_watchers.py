"""Watchers whose connection does not take the stream in time (`stream_send_timeout_s`): a slow
but steady reader is dropped as lagged and resumes exactly; one that stops reading is cut and
gives its connection back. Neither is an error of the server's (an attacker's probe: both
were cut by sse-starlette's SendTimeoutError, logged as an unhandled error with a traceback,
and never told `lagged`)."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import sys
import time
from pathlib import Path

import pytest

from runyard.models import RunState
from tests import web
from tests.sse import watch_log
from tests.support import ServerProcess, wait_for

pytestmark = pytest.mark.e2e

CHATTER = Path(__file__).parent / "programs" / "chatter.py"
# what the server logs when a stream ends in a way it did not mean
ERRORS = ("unhandled_error", "Traceback", "Exception in ASGI", "ASGI callable returned")


@pytest.fixture
def slow_server(start_server, write_job, jobs_dir: Path) -> ServerProcess:
    write_job(
        "chatter",
        f'command = ["{sys.executable}", "{CHATTER}", "30000", "now", "100", "0"]\n',
    )
    return start_server(jobs_dir, env={"RUNYARD_STREAM_SEND_TIMEOUT_S": "1"})


def finished_log(server: ServerProcess) -> tuple[str, bytes]:
    """A finished run's id and its log: some 3.5 MB, far more than socket buffers hold."""
    with server.client() as c:
        run = c.submit("chatter")
        assert server.wait_run(c, run.id).state is RunState.SUCCEEDED
    log = (server.data_dir / "runs" / run.id / "attempt-1.log").read_bytes()
    assert len(log) > 3_000_000
    return run.id, log


def lagged_total(server: ServerProcess) -> int:
    return int(web.get(f"{server.url}/health").json()["streams"]["lagged_total"])


def open_stream(server: ServerProcess, run_id: str) -> socket.socket:
    """A raw connection with a tiny receive buffer, asking for the log's stream."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    path = f"/v1/runs/{run_id}/logs/stream"
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
    return sock


def read_rest(sock: socket.socket, into: bytearray) -> None:
    """Everything until the server ends the response or drops the connection."""
    sock.settimeout(60)
    try:
        while chunk := sock.recv(1 << 20):
            into += chunk
            if into.endswith(b"\r\n0\r\n\r\n"):  # the response's last chunk
                return
    except ConnectionResetError:
        return  # cut: what arrived before is kept, as any SSE client keeps it


def dechunked(raw: bytes) -> bytes:
    """The body of a chunked response, as far as it arrived whole."""
    body = bytearray()
    rest = raw.split(b"\r\n\r\n", 1)[1]
    while b"\r\n" in rest:
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        body += rest[:size]
        if size == 0 or len(rest) < size + 2:
            break
        rest = rest[size + 2 :]
    return bytes(body)


def sse_events(body: bytes) -> list[dict[str, str]]:
    """The events that arrived whole (a cut one is dropped, as an SSE client drops it)."""
    events = []
    for block in body.split(b"\r\n\r\n")[:-1]:
        fields: dict[str, list[str]] = {}
        for line in block.decode().split("\r\n"):
            name, _, value = line.partition(": ")
            fields.setdefault(name, []).append(value)
        if "data" in fields:
            events.append({k: "\n".join(v) for k, v in fields.items()})
    return events


def received_log(events: list[dict[str, str]]) -> tuple[bytes, int]:
    """The log bytes the events carried, and the id of the last of them."""
    data, last = bytearray(), 0
    for event in events:
        if event["event"] == "log":
            data += event["data"].encode()
        elif event["event"] == "log.b64":
            data += base64.b64decode(event["data"])
        else:
            continue
        last = int(event["id"])
    return bytes(data), last


def resumed(server: ServerProcess, run_id: str, last_id: int) -> tuple[bytes, dict | None]:
    async def main():
        async with web.AsyncClient(timeout=60) as client:
            url = f"{server.url}/v1/runs/{run_id}/logs/stream"
            return await watch_log(client, url, last_id=str(last_id))

    got = asyncio.run(main())
    return bytes(got.data), got.end


def errors_logged(server: ServerProcess) -> list[str]:
    text = server.log_path.read_text()
    return [e for e in ERRORS if e in text]


def assert_no_error_logged(server: ServerProcess) -> None:
    assert not errors_logged(server), server.log_path.read_text()[-3000:]


def test_a_slow_steady_reader_is_dropped_as_lagged_and_resumes_exactly(slow_server) -> None:
    run_id, log = finished_log(slow_server)
    sock = open_stream(slow_server, run_id)
    raw = bytearray()
    # 1 KiB at a time, at a steady pace far below what the stream sends; until the server
    # has dropped it, then the rest at full speed (what it was handed, and its farewell)
    while lagged_total(slow_server) == 0 and not errors_logged(slow_server):
        raw += sock.recv(1024)
        time.sleep(0.05)  # the reader's pace (some 15 KiB/s), not a wait for anything
    read_rest(sock, raw)
    sock.close()
    events = sse_events(dechunked(bytes(raw)))
    data, last_id = received_log(events)
    assert events[0]["event"] == "attempt"
    assert 0 < last_id < len(log)
    assert data == log[:last_id]  # every event handed over arrived whole, in order
    final = events[-1]
    if final["event"] == "lagged":  # told (the connection took the farewell in time)
        assert json.loads(final["data"])["last_id"] == last_id
    else:  # or cut: it resumes from its last event as from any dropped connection
        assert final["event"] in ("log", "log.b64")
    rest, end = resumed(slow_server, run_id, last_id)
    assert data + rest == log
    assert end is not None and end["state"] == "succeeded"
    assert_no_error_logged(slow_server)


def test_a_reader_that_stops_is_cut_and_its_connection_given_back(slow_server) -> None:
    run_id, log = finished_log(slow_server)
    sock = open_stream(slow_server, run_id)

    def dropped() -> bool:
        lines = [json.loads(line) for line in slow_server.log_path.read_text().splitlines()
                 if line.startswith("{")]  # fmt: skip
        cut = any(e.get("event") == "stream_lagged" and e["told"] is False for e in lines)
        return cut or bool(errors_logged(slow_server))

    # it never reads: neither the stream nor the farewell is taken, and the connection is cut
    wait_for(dropped, 30, "the stream to be cut")
    assert_no_error_logged(slow_server)
    raw = bytearray()
    read_rest(sock, raw)
    sock.close()
    data, _ = received_log(sse_events(dechunked(bytes(raw))))
    assert log.startswith(data)
    assert lagged_total(slow_server) == 1
    assert_no_error_logged(slow_server)
    # the leak check (tests/e2e/conftest.py) sees the server give back the connection
