"""`runyard serve` binds its port before anything else starts: a port another process holds
is one line and one log line, status 2, with no data directory made, no supervisor started
and no database written. A probe found the whole runtime started on the data directory
(reconcile, the scheduler leading, the supervisor) before uvicorn's bind failed, status 3."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import free_port, wait_for

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("reuse", [False, True], ids=["plain", "reuseaddr"])
def test_a_port_in_use_is_refused_before_anything_starts(
    reuse: bool, jobs_dir: Path, tmp_path: Path
) -> None:
    """`reuseaddr`: the holder set SO_REUSEADDR, as another runyard (any asyncio server) does."""
    port = free_port()
    data = tmp_path / "data"
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, int(reuse))
        holder.bind(("127.0.0.1", port))
        holder.listen()
        done = subprocess.run(
            [sys.executable, "-m", "runyard", "serve", "--jobs", str(jobs_dir),
             "--data-dir", str(data), "--port", str(port)],
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path),
                 "RUNYARD_LOG_FORMAT": "json"},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "Traceback" not in out
    said = f"cannot listen on 127.0.0.1:{port}: address already in use"
    plain = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    assert len(plain) == 1 and plain[0].startswith(f"runyard: refusing to start: {said}")
    logged = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert [e["event"] for e in logged] == ["refusing_to_start"]  # nothing else began
    assert logged[0]["reason"].startswith(said)
    assert not data.exists()  # no database, no supervisor socket, nothing


def test_an_ipv6_address_in_brackets_is_served_on(jobs_dir: Path, tmp_path: Path) -> None:
    """`--host [::1]`, as a URL writes the address, is ::1 (it was refused as a host name)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "runyard", "serve", "--jobs", str(jobs_dir),
         "--data-dir", str(tmp_path / "data"), "--host", "[::1]", "--port", str(port)],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path),
             "RUNYARD_LOG_FORMAT": "json"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def live() -> bytes | None:
        assert server.poll() is None, "the server ended"
        try:
            with socket.create_connection(("::1", port), timeout=10) as conn:
                conn.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = b""
                while chunk := conn.recv(4096):
                    answer += chunk
                return answer
        except ConnectionRefusedError:
            return None  # not listening yet

    try:
        assert wait_for(live, timeout=60, what="an answer on [::1]").startswith(b"HTTP/1.1 200")
    finally:
        server.terminate()
        server.wait(timeout=30)
