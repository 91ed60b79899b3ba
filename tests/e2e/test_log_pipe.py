"""A log reader that stops (a pipe nobody drains) never stops the server (cli/log_sink.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import web
from tests.support import free_port, kill_everything, wait_for

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "jobs"


class PipedServer:
    """A real server whose stderr is a pipe that nobody reads until `read` is called."""

    def __init__(self, tmp_path: Path) -> None:
        self.port, self.data = free_port(), tmp_path / "data"
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "runyard", "serve", "--jobs", str(EXAMPLES), "--data-dir",
                str(self.data), "--port", str(self.port), "--capacity", "2"]  # fmt: skip
        env = {**os.environ, "RUNYARD_LOG_FORMAT": "json"}
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
        )
        self.lines: list[bytes] = []
        self._reader: threading.Thread | None = None

    def read(self) -> None:
        """The reader comes back (one thread, to the end): what was held, then the notice."""
        if self._reader is None:
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.join(30)  # the pipe's end: the server has exited
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)


@pytest.fixture
def piped_server(tmp_path: Path) -> Iterator[PipedServer]:
    server = PipedServer(tmp_path)
    try:
        wait_for(lambda: _answers(f"{server.url}/health/ready"), timeout=30, what="ready")
        yield server
    finally:
        server.read()  # so that it can log its way out
        server.proc.terminate()
        server.proc.wait(30)
        server.close()
        kill_everything(server.data)


def _answers(url: str) -> bool:
    try:
        return web.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_stalled_log_pipe_holds_lines_not_requests(piped_server: PipedServer) -> None:
    """(What happens past the bound, lines dropped and the notice, is the unit tests'.)"""
    requests = 1000  # a line of about 200 bytes each: three times what the pipe holds
    with web.Client(base_url=piped_server.url, timeout=10) as http:
        # a write that waited for the reader would hang the next request
        for _ in range(requests):
            assert http.get("/health/live").status_code == 200
        run = http.post("/v1/runs", json={"job": "true"}, headers={"prefer": "wait=30"})
        assert run.status_code == 200 and run.json()["state"] == "succeeded"
        assert http.get("/health/ready").status_code == 200
        piped_server.read()  # the reader comes back: what was held arrives

    def served() -> int:
        records = [json.loads(line) for line in list(piped_server.lines) if line[:1] == b"{"]
        return sum(r.get("event") == "request" and r["route"] == "/health/live" for r in records)

    wait_for(lambda: served() == requests, what="every line whole, none lost")
    # uvicorn's own lines among them ("Started server process"), JSON like every other
    others = [line for line in list(piped_server.lines) if line[:1] != b"{"]
    assert others == []
    uvicorn = [
        json.loads(line) for line in list(piped_server.lines) if b'"logger":"uvicorn' in line
    ]
    assert any("startup complete" in r["event"] for r in uvicorn)


SERVING_PROCESS = """
import asyncio, threading, warnings
from runyard.cli.serve import configure_logging

configure_logging("json")

async def serving() -> None:
    for n in range(2000):  # about 300 KB of warnings, each its own text
        warnings.warn(f"warning {n} " + "x" * 100)
        if n % 100 == 0:
            await asyncio.sleep(0)
    failing = threading.Thread(target=lambda: 1 / 0, name="failing")
    failing.start()
    failing.join()

    class Finalised:
        def __del__(self) -> None:
            raise ValueError("in a finaliser")

    Finalised()
    print("done", flush=True)

asyncio.run(serving())
"""


def test_what_python_writes_to_stderr_itself_never_waits_on_a_stalled_reader() -> None:
    """Warnings and a thread's traceback go through the same non-blocking log, not
    straight to stderr (where a full pipe would stop the event loop that wrote them)."""
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVING_PROCESS], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        said: list[bytes] = []
        printer = threading.Thread(target=lambda: said.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        printer.start()
        printer.join(30)  # nobody reads its stderr meanwhile
        assert said == [b"done\n"], "the process stopped in a write to its stderr"
        err = proc.stderr.read()  # the reader comes back: held lines, then the notice
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
    assert all(b"warning %d " % n in err for n in range(2000))  # held, none lost: under the bound
    failed = [json.loads(line) for line in err.splitlines() if b'"thread_failed"' in line]
    assert failed and failed[0]["thread"] == "failing"
    assert "ZeroDivisionError" in failed[0]["exception"]
    unraisable = [json.loads(line) for line in err.splitlines() if b'"unraisable"' in line]
    assert unraisable and "ValueError: in a finaliser" in unraisable[0]["exception"]
    assert b"Exception ignored" not in err  # nothing went around the log
