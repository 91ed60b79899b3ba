"""Shutdown as documented: on SIGTERM every open stream (a run's log, a run's events over SSE
and over a WebSocket, the feed, a log stream still waiting for its run to start) gets a whole
`shutdown` event and then a clean end of its response, before the server exits in its
bounded time. A cut stream would show as an incomplete chunked body (httpx raises) or a
WebSocket closed without the event."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from httpx_sse import aconnect_sse
from websockets.asyncio.client import connect

from runyard.models import RunState
from tests import web
from tests.support import wait_for

pytestmark = pytest.mark.e2e
SHUTDOWN_S = 4  # the server's bound; half of it is the streams' grace


@pytest.fixture
def busy_jobs(write_job, jobs_dir):
    # a steady writer, so log streams are busy sending when the signal comes
    write_job(
        "busy",
        'command = ["sh", "-c", "i=0; while :; do echo line $i of a busy log; i=$((i+1)); '
        'sleep 0.005; done"]\n',
    )
    return jobs_dir


async def sse_until_closed(
    client: httpx.AsyncClient, url: str, opened: Callable[[], None]
) -> list[tuple[str, str]]:
    """Every event of the stream, read to the end of the response (not stopped early)."""
    got: list[tuple[str, str]] = []
    async with aconnect_sse(client, "GET", url) as source:
        async for sse in source.aiter_sse():
            if not got:
                opened()
            got.append((sse.event, sse.data))
    return got


async def ws_until_closed(url: str, opened: Callable[[], None]) -> tuple[list[dict], int | None]:
    got: list[dict] = []
    async with connect(url) as ws:
        async for message in ws:
            if not got:
                opened()
            got.append(json.loads(message))
    return got, ws.close_code


def test_sigterm_gives_every_open_stream_its_shutdown_event(start_server, busy_jobs) -> None:
    server = start_server(
        busy_jobs, capacity=1, env={"RUNYARD_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_S)}
    )
    with server.client() as c:
        running = c.submit("busy")
        wait_for(lambda: c.run(running.id).state is RunState.RUNNING, what="running")
        queued = c.submit("busy")  # capacity 1: it waits, and so do its log's watchers
    base = f"{server.url}/v1/runs"
    ws_url = f"ws://127.0.0.1:{server.port}/v1/runs/{running.id}/ws"

    async def main() -> tuple[list, list, int | None]:
        limits = httpx.Limits(max_connections=200)
        async with web.AsyncClient(timeout=60, limits=limits) as client:
            opened = 0
            all_open = asyncio.Event()
            expected = 90  # every stream but the queued run's (which say nothing until it runs)

            def one_more() -> None:
                nonlocal opened
                opened += 1
                if opened == expected:
                    all_open.set()

            sse: list[Awaitable[list[tuple[str, str]]]] = []
            sse += [sse_until_closed(client, f"{base}/{running.id}/logs/stream", one_more)
                    for _ in range(25)]  # fmt: skip
            sse += [sse_until_closed(client, f"{base}/{running.id}/events", one_more)
                    for _ in range(25)]  # fmt: skip
            sse += [sse_until_closed(client, f"{server.url}/v1/events", one_more)
                    for _ in range(25)]  # fmt: skip
            sse += [sse_until_closed(client, f"{base}/{queued.id}/logs/stream", one_more)
                    for _ in range(10)]  # fmt: skip
            sse_tasks = [asyncio.ensure_future(s) for s in sse]
            ws_tasks = [asyncio.ensure_future(ws_until_closed(ws_url, one_more)) for _ in range(15)]
            async with asyncio.timeout(60):
                await all_open.wait()
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            # its bound, plus the time a loaded machine takes to start a Python exit
            code = await asyncio.to_thread(server.proc.wait, SHUTDOWN_S + 10)
            sse_results = await asyncio.gather(*sse_tasks, return_exceptions=True)
            ws_results = await asyncio.gather(*ws_tasks, return_exceptions=True)
            return sse_results, ws_results, code

    sse_results, ws_results, code = asyncio.run(main())
    assert code in (0, -signal.SIGTERM)
    assert len(sse_results) == 85 and len(ws_results) == 15
    for got in sse_results:
        assert not isinstance(got, BaseException), f"stream cut: {got!r}"  # chunked body whole
        event, data = got[-1]
        assert event == "shutdown", got[-3:]
        assert "shutting down" in json.loads(data)["detail"]  # a whole event: its JSON parses
    for result in ws_results:
        assert not isinstance(result, BaseException), f"socket cut: {result!r}"
        messages, close_code = result
        assert messages[-1]["type"] == "shutdown"
        assert close_code == 1001  # going away, sent by the handler after the event


def test_sigterm_answers_a_waiting_submission_with_its_run(start_server, busy_jobs) -> None:
    """A `Prefer: wait` submission still waiting when the server stops is answered (202, its
    run as it is), not cut off with a bare 500: it was accepted, and a client must know it."""
    server = start_server(
        busy_jobs, capacity=1, env={"RUNYARD_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_S)}
    )

    def running() -> bool:
        runs = web.get(f"{server.url}/v1/runs").json()["runs"]
        return bool(runs) and runs[0]["state"] == "running"

    async def main() -> tuple[httpx.Response, int]:
        async with web.AsyncClient(timeout=60) as client:
            waiting = asyncio.ensure_future(
                client.post(
                    f"{server.url}/v1/runs", json={"job": "busy"}, headers={"Prefer": "wait=60"}
                )
            )
            await asyncio.to_thread(wait_for, running, what="its run running")
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            answer = await waiting
            return answer, await asyncio.to_thread(server.proc.wait, SHUTDOWN_S + 10)

    answer, code = asyncio.run(main())
    assert code in (0, -signal.SIGTERM)
    assert answer.status_code == 202, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["state"] == "running"
    assert answer.headers["location"] == f"/v1/runs/{answer.json()['id']}"


FLOOD = (
    'command = ["sh", "-c", "yes \'a line of a log that floods, to fill buffers fast\' '
    '| head -c 30000000; sleep 600"]\n'
)


def unsent(server_port: int, client: socket.socket) -> int:
    """Bytes the kernel holds unsent (or unacknowledged) on the server's end of `client`'s
    connection, as /proc/net/tcp shows them."""
    client_port = client.getsockname()[1]
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
        if (local, remote) == (server_port, client_port):
            return int(fields[4].split(":")[0], 16)
    return 0


def test_sigterm_cuts_a_stream_whose_client_does_not_read(
    start_server, write_job, jobs_dir: Path
) -> None:
    """Its `shutdown` event not taken in the streams' grace, the stream was closed, not cut:
    uvicorn then flushed to a client that never reads until its own graceful time was over
    (`timeout graceful shutdown exceeded`, 1.5 times the shutdown time in all), and said the
    response had not been completed. It is reset: the server exits as soon as the rest has."""
    write_job("flood", FLOOD)
    server = start_server(jobs_dir, env={"RUNYARD_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_S)})
    with server.client() as c:
        run = c.submit("flood")
        wait_for(lambda: c.run(run.id).state is RunState.RUNNING, what="running")
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(f"GET /v1/runs/{run.id}/logs/stream HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            wait_for(lambda: unsent(server.port, sock) > 0, what="its buffers full, unread")
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            code = server.proc.wait(SHUTDOWN_S + 10)
    assert code in (0, -signal.SIGTERM)
    log = server.log_path.read_text()
    assert "timeout graceful shutdown exceeded" not in log
    assert "ASGI callable returned without completing response" not in log
