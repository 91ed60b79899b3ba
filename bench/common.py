"""Shared bench plumbing: percentiles, a runyard server process, waiting on it."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    data_dir: Path
    jobs_dir: Path
    capacity: int
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, **env: str) -> Server:
        self.port = self.port or free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "runyard", "serve", "--jobs", str(self.jobs_dir),
                "--data-dir", str(self.data_dir), "--port", str(self.port),
                "--capacity", str(self.capacity)]  # fmt: skip
        full_env = {**os.environ, "RUNYARD_LOG_FORMAT": "json", **env}
        log = (self.data_dir / "server.log").open("ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=full_env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not become ready")

    def rss_mb(self) -> float:
        assert self.proc is not None
        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def wait_idle(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            h = httpx.get(f"{self.url}/health", timeout=10).json()
            if h["active"] == 0 and h["queued"] == 0:
                return
            time.sleep(0.05)
        raise RuntimeError("runs did not finish")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        for proc in psutil.process_iter(["cmdline"]):
            cmd = proc.info["cmdline"] or []
            if "runyard.execution.supervisor_process" in cmd and str(self.data_dir) in cmd:
                proc.kill()

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.data_dir / "runyard.db")


def write_jobs(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "true.toml").write_text('command = ["/bin/true"]\nartifacts = []\n')
    (directory / "hold.toml").write_text('command = ["sleep", "3600"]\nkill_grace_s = 0\n')
    ticker = REPO / "bench" / "programs" / "ticker.py"
    (directory / "ticker.toml").write_text(
        f'command = ["{sys.executable}", "{ticker}", "{{n}}", "{{gap}}", "{{delay}}"]\n'
        '[params.n]\ntype = "int"\ndefault = 100\n[params.gap]\ntype = "float"\ndefault = 0.05\n'
        '[params.delay]\ntype = "float"\ndefault = 0\n'
    )
    return directory


# --- CPU per process: the budget of a run -------------------------------------------------


def client_cpu_s() -> float:
    """This process's CPU (every thread, user + system) so far, in seconds."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def supervisor_pid(data_dir: Path) -> int | None:
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "runyard.execution.supervisor_process" in cmd and str(data_dir) in cmd:
            return proc.pid
    return None


def redis_cpu_s(url: str = "redis://127.0.0.1:6379") -> float:
    import redis

    info = redis.Redis.from_url(url).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def process_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


class CpuMeter:
    """CPU seconds spent between start() and stop() by named groups of processes.

    A group's own time is user + system of its processes (every thread); its `programs` time is
    what its processes reaped from children that ended in the window (the kernel's cutime and
    cstime): the programs a supervisor or worker ran, with everything they ran in turn. The
    groups are fixed at start(): a process born later counts once its parent reaps it."""

    def __init__(self, groups: dict[str, list[psutil.Process]], *, redis: bool = False) -> None:
        self.groups = groups
        self.redis = redis
        self._before: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        out = {"client": client_cpu_s(), "programs": 0.0}
        for name, procs in self.groups.items():
            own = system = 0.0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    own += t.user + t.system
                    system += t.system
                    out["programs"] += t.children_user + t.children_system
            out[name] = own
            # where a process's time goes: in the kernel, and on its main thread (an asyncio
            # server's event loop) against its other threads (a store's, a thread pool's)
            out[f"{name}.system"] = system
            with contextlib.suppress(psutil.Error):
                main = [th for th in procs[0].threads() if th.id == procs[0].pid]
                out[f"{name}.main_thread"] = sum(th.user_time + th.system_time for th in main)
        if self.redis:
            out["redis"] = redis_cpu_s()
        return out

    def start(self) -> CpuMeter:
        self._before = self._read()
        return self

    def stop(self, runs: int) -> dict[str, float]:
        """CPU milliseconds per run for each group, the client, programs and (if asked) Redis."""
        after = self._read()
        return {k: (after[k] - self._before[k]) * 1000 / runs for k in after if k in self._before}
