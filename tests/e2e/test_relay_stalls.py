"""A member that stops answering (SIGSTOP: alive, its lease still valid, silent) costs only the
requests relayed to it: they end at the relay's deadline, or when their caller leaves, and
relays to the other members go on meanwhile."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import web
from tests.e2e.conftest import _socket_inodes_to
from tests.support import ServerProcess, wait_for

pytestmark = pytest.mark.e2e

SECRET = "s3cret-of-the-cluster-0123456789"  # noqa: S105  a test cluster's


@pytest.fixture
def member(start_server, write_job, jobs_dir: Path, database, tmp_path: Path):
    write_job("short", 'command = ["sh", "-c", "echo short done"]\n')
    write_job("long", 'command = ["sh", "-c", "echo started; exec sleep 600"]\n')

    def start(name: str, **env: str) -> ServerProcess:
        env = {"RUNYARD_DATABASE_URL": database, "RUNYARD_SERVER_ID": name,
               "RUNYARD_CLUSTER_SECRET": SECRET, "RUNYARD_LEASE_S": "120", **env}  # fmt: skip
        return start_server(jobs_dir, capacity=2, data_dir=tmp_path / name, env=env)

    return start


@contextlib.contextmanager
def paused(server: ServerProcess) -> Iterator[None]:
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)


def ran_to_end(server: ServerProcess, job: str) -> str:
    run_id: str = web.post(f"{server.url}/v1/runs", json={"job": job}).json()["id"]
    wait_for(
        lambda: web.get(f"{server.url}/v1/runs/{run_id}").json()["state"] == "succeeded",
        what=f"{job} to succeed",
    )
    return run_id


def connections(relay: ServerProcess, to: ServerProcess) -> int:
    """The relay's open TCP connections to the member `to`."""
    assert relay.proc is not None
    to_member = _socket_inodes_to({to.port})
    count = 0
    for fd in os.listdir(f"/proc/{relay.proc.pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{relay.proc.pid}/fd/{fd}")
            count += target.startswith("socket:[") and target[8:-1] in to_member
    return count


@pytest.mark.timeout(120)
def test_a_silent_member_fills_only_its_own_pool_and_its_callers_leaving_closes_the_relays(
    member,
) -> None:
    c1 = member("c1")
    on_c1 = ran_to_end(c1, "short")
    with paused(c1):  # c3 alone claims the next run: its files are on c3
        c3 = member("c3")
        on_c3 = ran_to_end(c3, "short")
    c2 = member("c2")

    with paused(c1):
        callers = []
        try:
            for _ in range(110):  # more than one shared pool of 100 connections held
                caller = socket.create_connection(("127.0.0.1", c2.port))
                caller.sendall(f"GET /v1/runs/{on_c1}/logs HTTP/1.1\r\nHost: c2\r\n\r\n".encode())
                callers.append(caller)
            wait_for(lambda: connections(c2, c1) >= 100, what="c2's relays to c1 to wait")

            got = web.get(f"{c2.url}/v1/runs/{on_c3}/logs", timeout=30)
            assert got.status_code == 200, got.text
            assert got.text == "short done\n" and got.headers["x-runyard-served-by"] == "c3"
        finally:
            for caller in callers:
                caller.close()
        # the callers left: their relays are called off, not held until the deadline (35 s)
        wait_for(lambda: connections(c2, c1) == 0, timeout=20, what="c2 to drop its relays")


@pytest.mark.timeout(120)
def test_a_member_that_stops_answering_ends_the_streams_and_requests_relayed_to_it(
    member,
) -> None:
    c1 = member("c1")
    finished = ran_to_end(c1, "short")
    long = web.post(f"{c1.url}/v1/runs", json={"job": "long"}).json()["id"]
    # heartbeats each second: a relayed answer silent for 2 x 1 + 5 s is stalled
    c2 = member("c2", RUNYARD_HEARTBEAT_S="1")
    try:
        timeout = httpx.Timeout(60.0)
        with web.stream("GET", f"{c2.url}/v1/runs/{long}/logs/stream", timeout=timeout) as resp:
            assert resp.status_code == 200 and resp.headers["x-runyard-served-by"] == "c1"
            lines = resp.iter_lines()
            assert any("started" in line for line in lines)
            with paused(c1), pytest.raises(httpx.RemoteProtocolError):
                for _ in lines:  # heartbeats while c1 runs; then c1 falls silent
                    pass
            # the stream was cut, not ended: a watcher cannot take it for a complete log

        with paused(c1):
            got = web.get(f"{c2.url}/v1/runs/{finished}/logs", timeout=60)
        assert got.status_code == 503, got.text
        assert got.headers["content-type"] == "application/problem+json"
        assert "c1" in got.json()["detail"] and "did not answer" in got.json()["detail"]
    finally:
        web.post(f"{c1.url}/v1/runs/{long}/cancel")
