"""A WebSocket client that goes away with a reset (SO_LINGER 0), as a crashed or killed peer
does: nothing logged at error for it. The app's close came after the loss and armed the cut a
close is given (cli/ws_guard.py); CLOSE_GRACE_S later it fired on the closed socket, and every
such client left an `Exception in callback <function reset>` traceback."""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path

import psutil
import pytest

from runyard.cli.ws_guard import CLOSE_GRACE_S
from tests import web
from tests.e2e.test_websocket_abuse import PING, frame, opened
from tests.support import ServerProcess, wait_for

pytestmark = pytest.mark.e2e
RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, for 0 s: close() sends a reset


def served(server: ServerProcess, port: int) -> bool:
    """Whether the server still holds its end of the connection from `port`."""
    assert server.proc is not None
    return any(
        c.raddr and c.raddr.port == port
        for c in psutil.Process(server.proc.pid).net_connections("tcp")
    )


def errors(log: Path) -> list[str]:
    found = []
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            found.append(line)  # not the server's JSON: a bare traceback
            continue
        if record.get("level") in ("error", "critical"):
            found.append(line)
    return found


def test_clients_that_reset_their_websocket_leave_no_error_logged(
    start_server, write_job, jobs_dir: Path
) -> None:
    write_job("quiet", 'command = ["sleep", "60"]\n')
    server = start_server(jobs_dir)
    run_id = str(web.post(f"{server.url}/v1/runs", json={"job": "quiet"}).json()["id"])
    ports = []
    for _ in range(10):
        with opened(server, run_id) as sock:
            assert sock.recv(1)  # its first event: the stream is under way
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
            ports.append(sock.getsockname()[1])
    wait_for(lambda: not any(served(server, p) for p in ports), what="the resets heard")

    # A cut fires CLOSE_GRACE_S after the close that armed it. One armed after any armed for
    # the reset connections marks the time: a client that pings and reads none of the pongs
    # is failed, and its close, which it does not read either, is given back only by its cut.
    with opened(server, run_id, rcvbuf=4096) as sock:
        sock.settimeout(CLOSE_GRACE_S + 20)
        flood = frame(PING, b"p" * 125) * 1000
        with pytest.raises(OSError):  # its connection cut: a reset, or EPIPE
            for _ in range(2000):
                sock.sendall(flood)
        port = sock.getsockname()[1]
    wait_for(lambda: not served(server, port), what="the flooding connection cut")
    assert errors(server.log_path) == []
    assert web.post(f"{server.url}/v1/runs/{run_id}/cancel").status_code == 202
