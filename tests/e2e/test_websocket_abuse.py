"""A WebSocket client as an attacker: each case ends in a close that names it, with the
connection given back and no traceback logged (cli/ws_guard.py)."""

from __future__ import annotations

import base64
import os
import socket
import struct
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests import web
from tests.support import ServerProcess, wait_for

pytestmark = pytest.mark.e2e
TEXT, BINARY, CONT, CLOSE, PING = 0x1, 0x2, 0x0, 0x8, 0x9


def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A client's frame, masked as a client's must be."""
    mask = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def handshake(server: ServerProcess, run_id: str, path_extra: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /v1/runs/{run_id}/ws{path_extra} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


@contextmanager
def opened(server: ServerProcess, run_id: str, rcvbuf: int = 0) -> Iterator[socket.socket]:
    """A WebSocket to the run's events, past its 101; `rcvbuf`: a small window, set before
    the connection is made (after, the kernel keeps the window it offered)."""
    sock = socket.socket()
    sock.settimeout(30)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", server.port))
    try:
        sock.sendall(handshake(server, run_id))
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        yield sock
    finally:
        sock.close()


def close_code(sock: socket.socket) -> tuple[int, str]:
    """Read the server's frames until its close frame: (code, reason)."""
    buf = b""
    while True:
        while len(buf) < 2 or len(buf) < _frame_len(buf):
            got = sock.recv(65536)
            if not got:
                raise AssertionError("closed without a close frame")
            buf += got
        size = _frame_len(buf)
        opcode, payload = buf[0] & 0x0F, buf[_head_len(buf) : size]
        buf = buf[size:]
        if opcode == CLOSE:
            return struct.unpack(">H", payload[:2])[0], payload[2:].decode()


def _head_len(buf: bytes) -> int:
    n = buf[1] & 0x7F
    return 2 + (2 if n == 126 else 8 if n == 127 else 0)


def _frame_len(buf: bytes) -> int:
    n = buf[1] & 0x7F
    if n == 126:
        return 4 + struct.unpack(">H", buf[2:4])[0] if len(buf) >= 4 else 1 << 30
    if n == 127:
        return 10 + struct.unpack(">Q", buf[2:10])[0] if len(buf) >= 10 else 1 << 30
    return 2 + n


def open_fds(server: ServerProcess) -> int:
    assert server.proc is not None
    return len(os.listdir(f"/proc/{server.proc.pid}/fd"))


@pytest.fixture
def watched(start_server, write_job, jobs_dir: Path) -> Iterator[tuple[ServerProcess, str]]:
    """A server and a running run to watch (cancelled at the end: the leak check waits)."""
    write_job("quiet", 'command = ["sleep", "60"]\n')
    server = start_server(jobs_dir)
    run_id = str(web.post(f"{server.url}/v1/runs", json={"job": "quiet"}).json()["id"])
    yield server, run_id
    assert web.post(f"{server.url}/v1/runs/{run_id}/cancel").status_code in {200, 202}


def test_invalid_utf8_is_closed_1007_without_a_traceback(watched) -> None:
    server, run_id = watched
    with opened(server, run_id) as sock:
        sock.sendall(frame(TEXT, b"ok \xff\xfe"))
        assert close_code(sock) == (1007, "invalid UTF-8 at byte 3")
    assert "Traceback" not in server.log_path.read_text()


def test_a_message_of_endless_empty_frames_is_closed_1009(watched) -> None:
    server, run_id = watched
    with opened(server, run_id) as sock:
        sock.sendall(frame(BINARY, b"", fin=False) + frame(CONT, b"", fin=False) * 5000)
        assert close_code(sock) == (1009, "a message of more than 64 frames")


def test_a_large_message_is_closed_1009(watched) -> None:
    server, run_id = watched
    with opened(server, run_id) as sock:
        sock.sendall(frame(BINARY, b"x" * 60000, fin=False) + frame(CONT, b"x" * 60000))
        code, _ = close_code(sock)
    assert code == 1009


def test_a_ping_flood_that_reads_nothing_is_failed_and_cut(watched) -> None:
    """Pongs the client never reads: past 1 MiB the connection is failed (1008), and once
    the close is not taken either, the socket is cut and everything given back."""
    server, run_id = watched
    baseline = open_fds(server)
    with opened(server, run_id, rcvbuf=4096) as sock:
        flood = frame(PING, b"p" * 125) * 1000
        with pytest.raises(OSError):  # the server stops reading, then cuts the connection
            for _ in range(2000):
                sock.sendall(flood)
        wait_for(lambda: open_fds(server) <= baseline, what="the connection given back")
    assert "websocket_failed" in server.log_path.read_text()
    assert "frames are not being read" in server.log_path.read_text()


@pytest.mark.parametrize(("extra", "status"), [("?after=0&pad=" + "a" * 9000, 414)])
def test_a_handshake_the_parser_refuses_is_answered(watched, extra: str, status: int) -> None:
    server, run_id = watched
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(handshake(server, run_id, extra))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    assert b"application/problem+json" in answer
    assert b"urn:runyard:problem:handshake-refused" in answer


def test_an_upgrade_with_a_body_is_refused_as_problem_json(watched) -> None:
    server, run_id = watched
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        head = handshake(server, run_id).replace(b"\r\n\r\n", b"\r\nContent-Length: 1\r\n\r\nx")
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"urn:runyard:problem:handshake-refused" in answer


def test_a_half_close_with_events_unread_gives_the_connection_back(
    start_server, write_job, jobs_dir: Path
) -> None:
    """The peer sends FIN and reads nothing of a long history sent to it: closed through the
    guard and cut once the kernel's buffers are full, not held (the loop's own close on EOF
    waited for a drain that never came: the socket, its task and its stream, for good)."""
    program = jobs_dir / "chatty.py"
    program.write_text(
        "import json, os\n"
        "with open(os.environ['RUNYARD_PROGRESS_FILE'], 'a') as f:\n"
        "    for i in range(4000):\n"
        "        f.write(json.dumps({'message': 'x' * 1500}) + '\\n')\n"
    )
    write_job("chatty", f'command = ["{sys.executable}", "{program}"]\n')
    server = start_server(jobs_dir)
    run_id = str(web.post(f"{server.url}/v1/runs", json={"job": "chatty"}).json()["id"])
    wait_for(lambda: web.get(f"{server.url}/v1/runs/{run_id}").json()["state"] == "succeeded")
    baseline = open_fds(server)
    with opened(server, run_id, rcvbuf=4096) as sock:
        sock.shutdown(socket.SHUT_WR)
        wait_for(lambda: open_fds(server) <= baseline, what="the connection given back")
