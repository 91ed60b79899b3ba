"""A client that asks for a large answer and then reads none of it is cut after twice
`stream_send_timeout_s` and a heartbeat, and what its answer held is given back: the open
file, and on a cluster the relaying server's connection to the member holding the files, and
that member's file (a probe: all were held for as long as the client kept its socket open)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import web
from tests.e2e.test_relay_stalls import SECRET, connections
from tests.support import ServerProcess, wait_for

pytestmark = pytest.mark.e2e

BIG = 'command = ["sh", "-c", "mkdir out && head -c 30000000 /dev/zero > out/big.bin"]\n'
BIG += 'artifacts = ["out/**"]\n'
QUICK = {"RUNYARD_STREAM_SEND_TIMEOUT_S": "1", "RUNYARD_HEARTBEAT_S": "1"}  # a cut after 3 s


def finished_big(server: ServerProcess) -> str:
    run_id: str = web.post(f"{server.url}/v1/runs", json={"job": "big"}).json()["id"]
    wait_for(
        lambda: web.get(f"{server.url}/v1/runs/{run_id}").json()["state"] == "succeeded",
        what="the run to write its artifact",
    )
    return run_id


def open_files(server: ServerProcess, name: str) -> int:
    """The server's descriptors open on a file called `name`."""
    assert server.proc is not None
    count = 0
    for fd in os.listdir(f"/proc/{server.proc.pid}/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/{server.proc.pid}/fd/{fd}").endswith(f"/{name}")
    return count


@contextlib.contextmanager
def never_reading(server: ServerProcess, path: str) -> Iterator[socket.socket]:
    """A connection that asks for `path` and reads nothing (a tiny receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    try:
        yield sock
    finally:
        sock.close()


def cut_off(sock: socket.socket) -> bool:
    """The server has closed this connection: reading what it had sent ends, or is reset."""
    sock.settimeout(10)
    try:
        while sock.recv(1 << 20):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def stalls_logged(server: ServerProcess) -> list[dict[str, object]]:
    lines = server.log_path.read_text().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    return [e for e in events if e.get("event") == "client_stalled"]


def test_a_download_nobody_reads_is_cut_and_its_file_closed(
    start_server, write_job, jobs_dir: Path
) -> None:
    write_job("big", BIG)
    server = start_server(jobs_dir, env=QUICK)
    run_id = finished_big(server)
    with never_reading(server, f"/v1/runs/{run_id}/artifacts/out/big.bin") as sock:
        wait_for(lambda: open_files(server, "big.bin") == 1, what="the download to begin")
        # its file is closed once the connection is cut (3 s), while the client still holds it
        wait_for(lambda: open_files(server, "big.bin") == 0, timeout=30, what="the file closed")
        assert [e["path"] for e in stalls_logged(server)] == [
            f"/v1/runs/{run_id}/artifacts/out/big.bin"
        ]
        assert cut_off(sock)
    # a reader that takes it whole is not cut, however long the answer
    got = web.get(f"{server.url}/v1/runs/{run_id}/artifacts/out/big.bin", timeout=60)
    assert got.status_code == 200 and len(got.content) == 30_000_000
    assert len(stalls_logged(server)) == 1


def server_side_states(server_port: int, client: socket.socket) -> list[str]:
    """The TCP states (hex, as /proc/net/tcp shows them) of the server's end of `client`'s
    connection: 01 established, 04 FIN-WAIT-1 (closed, its unsent bytes still owed)."""
    client_port = client.getsockname()[1]
    states = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
        if (local, remote) == (server_port, client_port):
            states.append(fields[3])
    return states


def test_a_cut_connection_is_reset_not_left_owing_its_unsent_bytes(
    start_server, write_job, jobs_dir: Path
) -> None:
    """A probe: a cut was asyncio's abort, a close the kernel went on delivering: the
    connection sat in FIN-WAIT-1 for minutes holding megabytes for a client that reads
    nothing (20 cut log streams: 75 MiB for over 60 s). It is reset: nothing left owed."""
    write_job("big", BIG)
    server = start_server(jobs_dir, env=QUICK)
    run_id = finished_big(server)
    with never_reading(server, f"/v1/runs/{run_id}/artifacts/out/big.bin") as sock:
        wait_for(lambda: open_files(server, "big.bin") == 1, what="the download to begin")
        wait_for(lambda: stalls_logged(server), timeout=30, what="the connection cut")
        wait_for(lambda: not server_side_states(server.port, sock), timeout=5,
                 what="the server's end of it gone")  # fmt: skip
        with pytest.raises(ConnectionResetError):
            while sock.recv(1 << 20):
                pass


@pytest.mark.timeout(120)
def test_a_relayed_download_nobody_reads_gives_back_both_members_connections(
    start_server, write_job, jobs_dir: Path, database, tmp_path: Path
) -> None:
    write_job("big", BIG)

    def member(name: str) -> ServerProcess:
        env = {"RUNYARD_DATABASE_URL": database, "RUNYARD_SERVER_ID": name,
               "RUNYARD_CLUSTER_SECRET": SECRET, "RUNYARD_LEASE_S": "120",
               **QUICK}  # fmt: skip
        return start_server(jobs_dir, capacity=2, data_dir=tmp_path / name, env=env)

    c1 = member("c1")
    run_id = finished_big(c1)
    c2 = member("c2")
    with never_reading(c2, f"/v1/runs/{run_id}/artifacts/out/big.bin") as sock:
        wait_for(lambda: open_files(c1, "big.bin") == 1, what="the relayed download to begin")
        assert connections(c2, c1) >= 1
        # the caller is cut at c2, whose relay then closes its connection to c1, whose file
        # closes: nothing is held on either member while the client keeps its socket
        wait_for(lambda: connections(c2, c1) == 0, timeout=30, what="c2 to drop its relay")
        wait_for(lambda: open_files(c1, "big.bin") == 0, timeout=30, what="c1 to close the file")
        assert stalls_logged(c2)
        assert cut_off(sock)
