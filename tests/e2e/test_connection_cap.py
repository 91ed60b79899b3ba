"""At most RUNYARD_MAX_CONNECTIONS connections at once, RUNYARD_MAX_CONNECTIONS_PER_CLIENT of
them from one address (cli/connection_cap.py): a connection that asks nothing held its
descriptor all the same, and enough of them took every descriptor of the server. A real
server; the connections are real sockets from several addresses of the loopback (all of
127.0.0.0/8 is the machine's own)."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from websockets.sync.client import connect

from runyard.cli.connection_cap import MIN_IDLE_S
from tests import web
from tests.support import processes_of, wait_for

pytestmark = pytest.mark.e2e

HEALTH = b"GET /health/live HTTP/1.1\r\nhost: runyard\r\n\r\n"


@pytest.fixture
def jobs(write_job, jobs_dir: Path) -> Path:
    write_job("hold", 'command = ["sleep", "600"]\n')
    write_job("quick", 'command = ["true"]\n')
    return jobs_dir


def dial(port: int, source: str) -> socket.socket:
    """A connection from `source` that asks nothing (yet)."""
    sock = socket.socket()
    sock.settimeout(10)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def answer(sock: socket.socket) -> bytes:
    """What the server sends until it closes."""
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    return got


def ask(sock: socket.socket, request: bytes = HEALTH) -> bytes:
    """One request on a kept-alive connection: its answer's status line."""
    sock.sendall(request)
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = sock.recv(65536)
        assert chunk, f"closed instead of answered: {got!r}"
        got += chunk
    return got.split(b"\r\n", 1)[0]


def is_closed(sock: socket.socket) -> bool:
    """Whether the server closed it (waited for up to 10 s)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False
    finally:
        sock.settimeout(10)


def capped(start_server, jobs: Path, most: int, per_client: int):
    env = {"RUNYARD_MAX_CONNECTIONS": str(most)}
    env["RUNYARD_MAX_CONNECTIONS_PER_CLIENT"] = str(per_client)
    return start_server(jobs, env=env)


def admits(port: int, source: str, n: int) -> bool:
    """Whether `n` new connections from `source` are all served (their places given back as
    the last ones closed; until then one is refused, 503 and closed)."""
    socks = [dial(port, source) for _ in range(n)]
    try:
        return all(ask(s) == b"HTTP/1.1 200 OK" for s in socks)
    except (AssertionError, OSError):
        return False
    finally:
        for s in socks:
            s.close()


def cut(url: str, why: str) -> float:
    """runyard_http_connections_cut_total{why=...} in /metrics."""
    for line in web.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(f'runyard_http_connections_cut_total{{why="{why}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_one_address_past_its_cap_is_answered_and_closed_and_others_get_in(
    start_server, jobs
) -> None:
    server = capped(start_server, jobs, 100, 4)
    held = [dial(server.port, "127.0.0.2") for _ in range(4)]
    extra = dial(server.port, "127.0.0.2")
    refused = answer(extra)  # before it sent anything
    head, _, body = refused.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ")
    assert b"content-type: application/problem+json" in head
    assert b"retry-after: 1" in head
    assert b"out-of-resources" in body and b"RUNYARD_MAX_CONNECTIONS_PER_CLIENT" in body
    other = dial(server.port, "127.0.0.3")  # another address is not held back
    assert ask(other) == b"HTTP/1.1 200 OK"
    for sock in held:  # the four it holds are served as ever
        assert ask(sock) == b"HTTP/1.1 200 OK"
    assert cut(server.url, "per_client") == 1.0
    for sock in [*held, extra, other]:
        sock.close()

    wait_for(lambda: admits(server.port, "127.0.0.2", 4), what="four from the address again")


def test_at_the_cap_the_connection_idle_longest_makes_room(start_server, jobs) -> None:
    server = capped(start_server, jobs, 6, 6)
    idle = [dial(server.port, "127.0.0.2") for _ in range(5)]
    partial = dial(server.port, "127.0.0.2")
    partial.sendall(b"GET /health/live HTTP/1.1\r\nhost")  # a head begun, never finished
    assert ask(idle[1]) == b"HTTP/1.1 200 OK"  # asked and answered: idle again, and newest
    time.sleep(MIN_IDLE_S)  # one accepted a moment ago may have its request on the way
    newcomer = dial(server.port, "127.0.0.3")
    assert ask(newcomer) == b"HTTP/1.1 200 OK"
    assert is_closed(idle[0])  # the oldest with nothing asked made room, as a keep-alive ends
    assert all(still_open(s) for s in [*idle[1:], partial])
    time.sleep(MIN_IDLE_S)  # the newcomer, idle now, is newer than the rest
    newcomer2 = dial(server.port, "127.0.0.3")
    assert ask(newcomer2) == b"HTTP/1.1 200 OK"
    assert is_closed(idle[2])  # then the next oldest: idle[1] asked since
    assert still_open(idle[1]) and still_open(partial)
    assert cut(server.url, "made_room") >= 2.0
    for sock in [*idle, partial, newcomer, newcomer2]:
        sock.close()


def test_with_every_connection_busy_a_new_one_is_refused_until_one_is_free(
    start_server, jobs
) -> None:
    server = capped(start_server, jobs, 2, 2)
    waits = [dial(server.port, "127.0.0.2") for _ in range(2)]
    statuses: list[bytes] = []

    def hold(sock: socket.socket) -> None:  # a request in progress until its run ends
        statuses.append(ask(sock, b'POST /v1/runs HTTP/1.1\r\nhost: r\r\nprefer: wait=120\r\n'
                                  b'content-type: application/json\r\ncontent-length: 15\r\n'
                                  b'\r\n{"job": "hold"}'))  # fmt: skip

    holders = [threading.Thread(target=hold, args=(s,)) for s in waits]
    for t in holders:
        t.start()

    def stored() -> int:
        with sqlite3.connect(server.data_dir / "runyard.db") as db:
            return int(db.execute("SELECT count(*) FROM runs").fetchone()[0])

    wait_for(lambda: stored() == 2 and len(processes_of(server.data_dir)) == 2,
             what="both waits in progress")  # fmt: skip
    with dial(server.port, "127.0.0.3") as sock:
        refused = answer(sock)
    assert refused.startswith(b"HTTP/1.1 503 ")
    assert b"RUNYARD_MAX_CONNECTIONS)" in refused
    for proc in processes_of(server.data_dir):  # the runs end: both waits are answered
        proc.kill()
    for t in holders:
        t.join(60)
    assert len(statuses) == 2 and all(s.startswith(b"HTTP/1.1 200") for s in statuses)
    time.sleep(MIN_IDLE_S)
    later = dial(server.port, "127.0.0.3")  # kept alive, idle now: one makes room
    assert ask(later) == b"HTTP/1.1 200 OK"
    for sock in [*waits, later]:
        sock.close()


def test_a_websocket_gives_its_place_back_when_it_ends(start_server, jobs) -> None:
    server = capped(start_server, jobs, 100, 2)
    run = web.post(f"{server.url}/v1/runs", json={"job": "quick"}, timeout=10).json()
    url = f"ws://127.0.0.1:{server.port}/v1/runs/{run['id']}/ws"
    for _ in range(5):  # each upgraded connection counted, and released at its end
        with connect(url, sock=dial(server.port, "127.0.0.2"), open_timeout=10):
            pass  # upgraded: the connection is the websocket's now

        # both places free again: the websocket's given back at its end
        wait_for(lambda: admits(server.port, "127.0.0.2", 2), what="the websocket's place")


def test_connections_whose_client_reads_none_of_its_answers_make_room(start_server, jobs) -> None:
    """A probe: every connection pinned by pipelined `/metrics` requests (no request cap holds
    them back) whose answers its client never read; each counted as busy, and `/health/live`
    was a 503 until the stalled readers were cut, over a minute later. Past the idle ones,
    the reader stalled longest is reset now to make room."""
    server = capped(start_server, jobs, 2, 2)
    metrics = b"GET /metrics HTTP/1.1\r\nhost: runyard\r\n\r\n" * 400
    pinned = []
    for _ in range(2):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # takes next to nothing
        sock.settimeout(10)
        sock.bind(("127.0.0.2", 0))
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(metrics)  # and never reads an answer
        pinned.append(sock)

    def health() -> bool:
        with dial(server.port, "127.0.0.3") as sock:
            return ask(sock) == b"HTTP/1.1 200 OK"

    # a hang guard: without room made, the stalled readers held every place for 75 s
    wait_for(health, timeout=30, what="/health/live answered with every place pinned")
    assert cut(server.url, "reader_stalled") >= 1
    for sock in pinned:
        sock.close()


def test_a_slow_reader_is_not_taken_for_a_stalled_one(start_server, write_job, jobs) -> None:
    """A review of the rule above: a download taken slowly but steadily had its writes paused
    a second, and was reset to make room for an attacker's connection. Only a client that
    takes nothing at all (nothing left the socket's queue) is."""
    write_job("big", 'command = ["sh", "-c", "mkdir -p outputs && head -c 20000000 /dev/zero '
                     '> outputs/big.bin"]\nartifacts = ["outputs/**"]\n')  # fmt: skip
    server = capped(start_server, jobs, 3, 3)
    with server.client() as c:
        run = c.submit("big")
        assert server.wait_run(c, run.id).state.value == "succeeded"
    victim = socket.socket()
    victim.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    victim.settimeout(10)
    victim.bind(("127.0.0.2", 0))
    victim.connect(("127.0.0.1", server.port))
    victim.sendall(f"GET /v1/runs/{run.id}/artifacts/outputs/big.bin HTTP/1.1\r\n"
                   "host: runyard\r\n\r\n".encode())  # fmt: skip
    streams = [dial(server.port, "127.0.0.3") for _ in range(2)]  # busy: requests in progress
    for sock in streams:
        sock.sendall(b"GET /v1/events HTTP/1.1\r\nhost: runyard\r\n\r\n")
    taken, refused = 0, 0
    deadline = time.monotonic() + 4 * 2.0  # four times the stall the rule waits for
    next_dial = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        chunk = victim.recv(8192)  # slowly, steadily: about 200 KB/s
        assert chunk, f"the slow download was cut after {taken} bytes"
        taken += len(chunk)
        time.sleep(0.04)
        if time.monotonic() >= next_dial:
            next_dial += 0.5
            with dial(server.port, "127.0.0.4") as sock:
                refused += answer(sock).startswith(b"HTTP/1.1 503 ")
    assert refused > 0  # the cap held: every place busy, none of them stalled
    assert cut(server.url, "reader_stalled") == 0
    for sock in [victim, *streams]:
        sock.close()
