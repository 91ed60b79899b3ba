"""Shutdown within its bound, whatever a client does then (a probe of a bad day): the streams
have half of `RUNYARD_SHUTDOWN_TIMEOUT_S` to send their `shutdown` event, every connection the
other half to end, and past it each is reset. Each case below held the server until uvicorn's
own graceful time ran out (`timeout graceful shutdown exceeded`, 1.5 times the bound in all),
which then cancelled the request mid-way: a traceback in the log, a bare 500 to the client."""

from __future__ import annotations

import json
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runyard.models import RunState
from tests import web
from tests.e2e.test_stream_shutdown import unsent
from tests.support import ServerProcess, wait_for

pytestmark = pytest.mark.e2e
SHUTDOWN_S = 4  # the bound the server is given in each test
FULL = 200_000  # bytes the kernel holds unsent to a client: its buffers are full
BAD = ("timeout graceful shutdown exceeded", "Exception in ASGI application", "Traceback")

LOUD = 'command = ["sh", "-c", "yes a line of a log to fill buffers | head -c 30000000"]\n'
BIG_FILE = (
    'command = ["sh", "-c", "head -c 200000000 /dev/zero > out.bin"]\nartifacts = ["out.bin"]\n'
)
PROGRESS = """import json, os, time
with open(os.environ["RUNYARD_PROGRESS_FILE"], "a") as f:
    for i in range(3000):
        f.write(json.dumps({"fraction": i / 3000, "message": "x" * 30000}) + "\\n")
        f.flush()
        print("line", i, "y" * 2000, flush=True)
        time.sleep(0.002)
"""


def big_progress(write_job, jobs_dir: Path) -> None:
    """A job whose run's events are large and many, to fill what a watcher does not read."""
    (jobs_dir / "progress.py").write_text(PROGRESS)
    write_job("big", f'command = ["{sys.executable}", "{{jobs_dir}}/progress.py"]\n')


def stopped(server: ServerProcess, sig: int = signal.SIGTERM, again_after: float = 0) -> str:
    """Signal the server (twice, `again_after` apart, if given) and wait for it: its log."""
    assert server.proc is not None
    server.proc.send_signal(sig)
    if again_after:
        time.sleep(again_after)  # the second signal comes while it shuts down: that is the case
        server.proc.send_signal(sig)
    server.proc.wait(SHUTDOWN_S + 10)
    log = server.log_path.read_text()
    assert not [bad for bad in BAD if bad in log], log[-3000:]
    return log


_OPEN: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _closed_after() -> Iterator[None]:
    """Every socket a test opened is closed when it ends, failed or not: one left open warns
    (ResourceWarning, an error here) in whichever test the collector happens to run in."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def not_reading(server: ServerProcess, head: bytes) -> socket.socket:
    sock = socket.socket()
    _OPEN.append(sock)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(head)
    return sock


def test_an_answer_complete_but_unread_is_cut_within_the_bound(
    start_server, write_job, jobs_dir: Path
) -> None:
    """An answer handed whole to the connection (a page of runs, 6 MB in one send) whose
    client reads none of it left its connection closing, flushing for ever, as for a stream
    whose `shutdown` event went out just before its client's buffers filled (CI saw that)."""
    write_job("wide", 'command = ["true"]\n[params.s]\ntype = "str"\nmax_length = 65536\n')
    server = start_server(jobs_dir, env={"RUNYARD_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_S)})
    batch = {"job": "wide", "params": {"s": "x" * 60_000}, "iterations": 100}
    assert web.post(f"{server.url}/v1/batches", json=batch).status_code == 202
    sock = not_reading(server, b"GET /v1/runs?limit=100 HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_for(lambda: unsent(server.port, sock) > 0, what="its buffers full, unread")
    log = stopped(server)
    assert server.proc is not None and server.proc.returncode in (0, -signal.SIGTERM)
    assert '"connection_cut_at_shutdown"' in log
    sock.close()


def test_a_websocket_whose_client_does_not_read_is_cut_within_the_bound(
    start_server, write_job, jobs_dir: Path
) -> None:
    """Its close (1001) not taken, the socket was cut 5 s after it, whatever the bound."""
    big_progress(write_job, jobs_dir)
    server = start_server(jobs_dir, env={"RUNYARD_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_S)})
    with server.client() as c:
        run = c.submit("big")
        wait_for(lambda: c.run(run.id).state is RunState.RUNNING, what="running")
    upgrade = (
        f"GET /v1/runs/{run.id}/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    socks = [not_reading(server, upgrade) for _ in range(2)]
    # the kernel's buffers full (and more waiting behind them, in the server)
    wait_for(lambda: all(unsent(server.port, s) > FULL for s in socks), what="frames unread")
    stopped(server)
    for sock in socks:
        sock.close()


def test_a_download_read_slowly_but_steadily_is_cut_within_the_bound(
    start_server, write_job, jobs_dir: Path
) -> None:
    """Each drain put the cut off again: a client taking 200 MB at 1 MB/s held the server."""
    write_job("big", BIG_FILE)
    server = start_server(jobs_dir, env={"RUNYARD_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_S)})
    with server.client() as c:
        run = c.submit("big")
        assert server.wait_run(c, run.id).state is RunState.SUCCEEDED
    head = f"GET /v1/runs/{run.id}/artifacts/out.bin HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    sock = not_reading(server, head)
    sock.setblocking(False)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    took = 0
    while server.proc.poll() is None:  # a slow reader: a little, often
        try:
            took += len(sock.recv(65536))
        except BlockingIOError:
            pass
        except ConnectionResetError:
            break
        time.sleep(0.05)
    sock.close()
    log = stopped(server)
    assert took < 200_000_000
    assert '"connection_cut_at_shutdown"' in log


def test_an_upload_whose_body_stalls_is_answered_503_at_shutdown(start_server) -> None:
    server = start_server(env={"RUNYARD_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_S)})
    head = b"PUT /v1/uploads?name=a.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(head + b"x" * 1000)  # and nothing more
    wait_for(lambda: any((server.data_dir / "uploads" / ".incoming").glob("*")),
             what="the upload begun")  # fmt: skip
    stopped(server)
    sock.settimeout(10)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    sock.close()
    assert answer.startswith(b"HTTP/1.1 503"), answer
    problem = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert problem["type"] == "urn:runyard:problem:unavailable"
    assert "shutting down" in problem["detail"]
    assert not list((server.data_dir / "uploads" / ".incoming").glob("*"))


def test_ctrl_c_twice_still_stops_the_runtime(start_server, write_job, jobs_dir: Path) -> None:
    """A second SIGINT made uvicorn skip the application's shutdown: the store was not closed,
    the loop's pending tasks were cancelled with tracebacks (KeyboardInterrupt, the lifespan's
    CancelledError). It now cuts the waits, not the runtime's stop."""
    write_job("big", BIG_FILE)
    server = start_server(jobs_dir, env={"RUNYARD_SHUTDOWN_TIMEOUT_S": "20"})
    with server.client() as c:
        run = c.submit("big")
        assert server.wait_run(c, run.id).state is RunState.SUCCEEDED
    head = f"GET /v1/runs/{run.id}/artifacts/out.bin HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    sock = not_reading(server, head)  # the shutdown waits for it: 10 s
    wait_for(lambda: unsent(server.port, sock) > FULL, what="its buffers full, unread")
    log = stopped(server, signal.SIGINT, again_after=1.0)
    assert "Application shutdown complete" in log
    sock.close()


def test_a_download_asked_for_while_shutting_down_is_whole(
    start_server, write_job, jobs_dir: Path
) -> None:
    """A probe: a request with no body asked for after shutdown began was refused as a body
    cut short, once its answer had begun (a download listens for its client leaving): a
    traceback per request, and the client's body cut off. Only a body still coming is."""
    write_job("big", BIG_FILE.replace("200000000", "5000000"))
    write_job("loud", LOUD)
    # The window the requests below have is the streams' grace (30 s), held by a stream whose
    # client reads nothing: an ended run's log, replayed from its file, blocks in a send. A
    # running run's did not always hold it: under load its watcher fell behind the program's
    # output and was dropped (`lagged`), its stream over before the signal, the listener
    # closed at once. The send timeout is past the grace, so only the grace ends the stream.
    env = {"RUNYARD_SHUTDOWN_TIMEOUT_S": "60", "RUNYARD_STREAM_SEND_TIMEOUT_S": "600"}
    server = start_server(jobs_dir, env=env)
    with server.client() as c:
        done = c.submit("big")
        assert server.wait_run(c, done.id).state is RunState.SUCCEEDED
        loud = c.submit("loud")
        assert server.wait_run(c, loud.id).state is RunState.SUCCEEDED
    head = f"GET /v1/runs/{loud.id}/logs/stream HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    sock = not_reading(server, head)  # holds the streams' grace: the window below
    wait_for(lambda: unsent(server.port, sock) > FULL, what="its buffers full, unread")
    url = f"{server.url}/v1/runs/{done.id}/artifacts/out.bin"
    with web.Client(timeout=30) as http:
        assert http.get(url, headers={"Range": "bytes=0-9"}).status_code == 206  # kept alive
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)

        def bodies_refused() -> bool:
            return http.put(f"{server.url}/v1/uploads", content=b"x").status_code == 503

        wait_for(bodies_refused, what="a body refused: shutdown under way")
        whole = http.get(url, headers={"Range": "bytes=0-4999999"})
        assert (whole.status_code, len(whole.content)) == (206, 5_000_000)
    sock.close()
    stopped(server)
