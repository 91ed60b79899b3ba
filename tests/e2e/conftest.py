"""Every request gives back what it took: each server a test starts is measured once ready
(open descriptors, threads outside the pools, asyncio tasks, stream tailers, inotify watches)
and again after the test, once its runs have ended; the test fails if any of them grew.

The check waits for the server to settle (connections closing, tailers retiring) rather than
for a time. A test whose server is meant to keep something (or is stopped or killed by the test
itself, which the check notices) can opt out with `@pytest.mark.leaks_allowed("why")`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import web
from tests.support import ServerProcess, wait_for

POSTGRES_PORT = 5432
SETTLE_S = 15.0  # how long a server may take to close what the test's clients left
# Tasks started once per event loop on first use, then kept for the server's life: one of
# each is not a leak (sse-starlette's shutdown watcher, started by the first stream).
LAZY_SINGLETONS = frozenset({"_shutdown_watcher"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "leaks_allowed(reason): the server may keep what this test's requests took"
    )


@dataclass(frozen=True)
class Held:
    """What one server process holds; fields are None where they could not be read."""

    fds: int
    inotify_watches: int
    threads: int | None  # outside the thread pools, which keep their threads by design
    asyncio_tasks: int | None
    tailers: int | None
    thread_names: tuple[str, ...] = ()  # the threads outside the pools, to say which grew
    task_kinds: tuple[tuple[str, int], ...] = ()  # coroutine names and counts, likewise

    def grown_from(self, before: Held) -> dict[str, tuple[int, int]]:
        grown = {}
        for name in ("fds", "inotify_watches", "threads", "asyncio_tasks", "tailers"):
            was, now = getattr(before, name), getattr(self, name)
            if was is not None and now is not None and now > was:
                grown[name] = (was, now)
        return grown


def _inotify_watches(pid: int) -> int:
    """Watches of every inotify descriptor the process holds ('inotify wd:' lines)."""
    total = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify":
                info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
                total += sum(line.startswith("inotify wd:") for line in info.splitlines())
    return total


def _tcp_sockets() -> list[tuple[int, int, str]]:
    """Every TCP socket on the machine: (local port, remote port, inode)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
                found.append((local, remote, fields[9]))
    return found


def _socket_inodes_to(ports: set[int]) -> set[str]:
    """Inodes of TCP sockets (any process) whose remote end is one of `ports`."""
    return {inode for _, remote, inode in _tcp_sockets() if remote in ports}


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def _pooled(port: int, peers: Collection[ServerProcess]) -> set[str]:
    """Inodes of the connections between a server (on `port`) and PostgreSQL or the other
    servers of the test, whichever side opened them."""
    sockets = _tcp_sockets()
    ports = {POSTGRES_PORT, *(p.port for p in peers)}
    theirs: set[str] = set()
    for peer in peers:
        if peer.proc is not None and peer.proc.poll() is None:
            theirs |= _socket_inodes(peer.proc.pid)
    # a peer's relay client connected to us: its end is the peer's, remote port ours
    callers = {local for local, remote, inode in sockets if remote == port and inode in theirs}
    return {
        inode for local, remote, inode in sockets
        if remote in ports or (local == port and remote in callers)
    }  # fmt: skip


def _fds(pid: int, port: int, peers: Collection[ServerProcess]) -> int:
    """Open descriptors, less the connections to PostgreSQL and between the servers of the
    test (`peers`), either way: those belong to the store's pool and to the relays' HTTP
    clients, which grow with load up to their limits and keep idle connections by design:
    bounded, not leaked."""
    pooled = _pooled(port, peers)
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:[") and target[8:-1] in pooled:
                continue
            count += 1
    return count


def _status(server: ServerProcess) -> dict[str, Any] | None:
    """The server's own counts from /v1/status (None when it needs a token we do not have)."""
    try:
        resp = web.get(f"{server.url}/v1/status", timeout=10)
    except httpx.HTTPError:
        return None
    if resp.status_code != 200:
        return None
    resources: dict[str, Any] | None = resp.json().get("resources")
    return resources


def _tasks(status: dict[str, Any]) -> int:
    kinds: dict[str, int] = status["task_kinds"]
    return int(status["asyncio_tasks"]) - sum(min(kinds.get(k, 0), 1) for k in LAZY_SINGLETONS)


def measure(server: ServerProcess, peers: Collection[ServerProcess] = ()) -> Held:
    assert server.proc is not None
    pid = server.proc.pid
    status = _status(server)
    # /proc after the status request, whose connection the server may still hold: read when
    # it has one (like a client's) on both sides of the comparison
    fds = _fds(pid, server.port, [p for p in peers if p is not server])
    tasks_on_disk = len(os.listdir(f"/proc/{pid}/task"))
    return Held(
        fds=fds,
        inotify_watches=_inotify_watches(pid),
        threads=tasks_on_disk - status["pooled_threads"] if status else None,
        asyncio_tasks=_tasks(status) if status else None,
        tailers=status["tailers"] if status else None,
        thread_names=tuple(status["other_threads"]) if status else (),
        task_kinds=tuple(sorted(status["task_kinds"].items())) if status else (),
    )


def _idle(server: ServerProcess) -> bool:
    """No run of this server queued or running: read from its SQLite store when it has one
    (current once the last end is written: /health's snapshot is rebuilt on its own schedule,
    up to a second or two later, which every test's teardown waited out), else from /health
    (public, no token needed)."""
    db = server.data_dir / "runyard.db"
    if db.exists():
        with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(db)) as conn:
            (left,) = conn.execute(
                "SELECT count(*) FROM runs WHERE state IN ('queued', 'running')"
            ).fetchone()
            return bool(left == 0)
    try:
        health = web.get(f"{server.url}/health", timeout=10).json()
    except (httpx.HTTPError, ValueError):
        return False
    return health.get("active") == 0 and health.get("queued") == 0


def _alive(server: ServerProcess) -> bool:
    return server.proc is not None and server.proc.poll() is None


def check_gave_back(server: ServerProcess, before: Held, peers: Collection[ServerProcess]) -> None:
    if not _alive(server):
        return  # stopped or killed by the test: nothing left to hold
    wait_for(lambda: _idle(server), timeout=60, what="the test's runs to end (leak check)")
    last: dict[str, Any] = {}

    def settled() -> bool:
        last["held"] = measure(server, peers)
        last["grown"] = last["held"].grown_from(before)
        return not last["grown"]

    try:
        wait_for(settled, timeout=SETTLE_S, what="the server to give back what it took")
    except AssertionError:
        detail = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in last["grown"].items())
        if "threads" in last["grown"]:
            detail += f" (threads {before.thread_names} -> {last['held'].thread_names})"
        if "asyncio_tasks" in last["grown"]:
            added = dict(last["held"].task_kinds)
            for kind, n in before.task_kinds:
                added[kind] = added.get(kind, 0) - n
            detail += f" (tasks added: { {k: n for k, n in added.items() if n > 0} })"
        pytest.fail(f"server {server.url} did not give back what requests took: {detail}")


@pytest.fixture
def start_server(
    start_server: Callable[..., ServerProcess], request: pytest.FixtureRequest
) -> Iterator[Callable[..., ServerProcess]]:
    """tests/conftest.py's start_server, with the leak check around every server started."""
    started: list[tuple[ServerProcess, Held]] = []

    def start(*args: object, **kwargs: object) -> ServerProcess:
        server = start_server(*args, **kwargs)
        started.append((server, measure(server, [s for s, _ in started])))
        return server

    yield start
    if request.node.get_closest_marker("leaks_allowed") is not None:
        return
    for server, before in started:
        check_gave_back(server, before, [s for s, _ in started])
