"""Test helpers: waiting on conditions with a deadline, real server processes, cleanup."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import psutil
import pytest

from runyard.client import Client
from runyard.clock import new_id
from runyard.models import Run, RunState
from runyard.schemas import RunView
from tests import web

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
EXAMPLE_JOBS = REPO / "examples" / "jobs"


def wait_for(check: Callable[[], T | None], timeout: float = 20.0, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


# Ports come from a block of this xdist worker's own, below the kernel's ephemeral range
# (32768 and up here), handed out in turn. A port from bind(0) could be handed to another
# worker, or taken as an outgoing connection's local port, in the second a test's server is
# down between a kill and its restart on the same port; then the restart fails to bind, and
# its readiness poll may be answered by somebody else's server.
_PORT_BLOCK = 1000
_PORT_BASE = 20000
_ports_given = 0


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` ("8m") at `where`, a disk to fill; unmounted after. Mounting needs
    root: without it the test is skipped."""
    where.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)]
    try:
        proc = subprocess.run(mount, capture_output=True, text=True, check=False)
    except OSError as exc:
        pytest.skip(f"cannot mount a tmpfs: {exc}")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _worker_index() -> int:
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name.removeprefix("gw") or 0)


def free_port() -> int:
    """A loopback port that no other test worker hands out, and that is free now."""
    global _ports_given  # noqa: PLW0603  one counter per test process
    start = _PORT_BASE + _worker_index() * _PORT_BLOCK
    ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert start + _PORT_BLOCK <= ephemeral, "too many xdist workers for the port blocks"
    for _ in range(_PORT_BLOCK):
        port = start + _ports_given % _PORT_BLOCK
        _ports_given += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise AssertionError(f"no free port in {start}..{start + _PORT_BLOCK - 1}")


def free_ports(count: int) -> list[int]:
    return [free_port() for _ in range(count)]


def processes_of(data_dir: Path) -> list[psutil.Process]:
    """Every live process that belongs to runs under `data_dir` (by the env runyard sets)."""
    needle = f"RUNYARD_WORKSPACE={data_dir}".encode()
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
        except (OSError, psutil.Error):
            continue
        if any(item.startswith(needle) for item in environ.split(b"\0")):
            found.append(proc)
    return found


def open_gate(data_dir: Path, run_id: str, name: str = "go") -> None:
    """Create `name` in a run's workspace, once there is one: a run reads `running` from
    its claim, before the supervisor has made the workspace (CI once touched it too soon)."""
    workspace = data_dir / "runs" / run_id / "workspace"
    wait_for(workspace.is_dir, what=f"run {run_id}'s workspace")
    (workspace / name).touch()


def supervisors_of(data_dir: Path) -> list[psutil.Process]:
    """The live supervisors of `data_dir` (not one that has exited and awaits its reaping).
    A process forked from one shows its command line until it execs — a program being
    spawned (the supervisor's child), and the warden (its parent: the supervisor's process
    forks and the parent becomes the warden): which is which cannot be told then, so it is
    looked at again until no process of that command line is another's parent or child.
    (Taking the parent as the supervisor while its warden had not exec'd yet made a test
    stop the warden-to-be, now and then.)"""
    deadline = time.monotonic() + 10
    while True:
        found = []
        for proc in psutil.process_iter(["cmdline", "status", "ppid"]):
            cmd = proc.info["cmdline"] or []
            ended = proc.info["status"] in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
            ours = "runyard.execution.supervisor_process" in cmd and str(data_dir) in cmd
            if ours and not ended:
                found.append(proc)
        pids = {proc.pid for proc in found}
        if not any(proc.info["ppid"] in pids for proc in found) or time.monotonic() > deadline:
            return [proc for proc in found if proc.info["ppid"] not in pids]
        time.sleep(0.005)  # an exec a moment away: nothing tells of it


def warden_of(supervisor: psutil.Process) -> psutil.Process:
    """The supervisor's warden (its parent, which ends its programs when it dies)."""
    warden = supervisor.parent()
    assert warden is not None and "runyard.execution.warden" in warden.cmdline()
    return warden


def kill_unwarded(supervisor: psutil.Process) -> None:
    """SIGKILL the supervisor and its warden first, as `kill -9` of every process of runyard
    (but its programs) would: what it ran runs on, under nobody."""
    warden = warden_of(supervisor)
    warden.kill()
    warden.wait(10)
    supervisor.kill()
    supervisor.wait(10)


def kill_everything(data_dir: Path) -> None:
    for proc in processes_of(data_dir) + supervisors_of(data_dir):
        with contextlib.suppress(psutil.Error):
            proc.kill()


@dataclass
class ServerProcess:
    data_dir: Path
    jobs_dir: Path
    port: int
    capacity: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    entry: list[str] = field(default_factory=lambda: ["-m", "runyard"])
    proc: subprocess.Popen[bytes] | None = None
    health: str = "/health/ready"  # what start() waits for (/health/live: up, not ready)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        env = {**os.environ, "RUNYARD_LOG_FORMAT": "json", **self.env}
        argv = [sys.executable, *self.entry, "serve", "--jobs", str(self.jobs_dir),
                "--data-dir", str(self.data_dir), "--port", str(self.port),
                "--capacity", str(self.capacity)]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_for(self._ready, timeout=30, what="server ready")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited: {self.log_path.read_text()[-3000:]}")
        try:
            ready = web.get(f"{self.url}{self.health}", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
        # The answer must come from our process, not from whoever else holds the port.
        return ready and any(
            c.status == psutil.CONN_LISTEN and c.laddr.port == self.port
            for c in psutil.Process(self.proc.pid).net_connections("tcp")
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def client(self) -> Client:
        return Client(self.url, verify=web.TLS)

    def wait_run(self, client: Client, run_id: str, timeout: float = 30) -> RunView:
        return wait_for(
            lambda: (r := client.run(run_id)).state.terminal and r,
            timeout=timeout,
            what=f"run {run_id} to finish",
        )


def queued_run(job: str = "j") -> Run:
    """A new queued run of a job that runs `true`, for a store's or a hub's tests to insert."""
    return Run(
        id=new_id(), job=job, params={}, state=RunState.QUEUED, priority=0,
        created_at=1000.0, spec={"name": job, "command": ["true"]},
    )  # fmt: skip


def on_terminal(
    server: ServerProcess, *args: str, stderr_on_terminal: bool = True
) -> tuple[int, bytes]:
    """`runyard ARGS` with its output on a pseudo-terminal: its exit status and every byte
    the terminal was sent."""
    main, side = os.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runyard", *args, "--server", server.url],
            stdin=side, stdout=side,
            stderr=side if stderr_on_terminal else subprocess.DEVNULL,
            env={**os.environ, "TERM": "xterm", "COLUMNS": "200"},
        )  # fmt: skip
    finally:
        os.close(side)
    drawn = bytearray()
    try:
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the terminal's last writer has gone
                break
            if not chunk:
                break
            drawn += chunk
        return proc.wait(timeout=60), bytes(drawn)
    finally:
        os.close(main)
