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

from runyard.cli.log_output import MAX_HELD_BYTES
from tests.support import free_port, kill_everything, wait_for

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "jobs"


@pytest.fixture
def piped_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real server whose stderr is a pipe that the test does not read until it says so."""
    port, data = free_port(), tmp_path / "data"
    argv = [sys.executable, "-m", "runyard", "serve", "--jobs", str(EXAMPLES),
            "--data-dir", str(data), "--port", str(port), "--capacity", "2"]  # fmt: skip
    env = {**os.environ, "RUNYARD_LOG_FORMAT": "json"}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{url}/health/ready"), timeout=30, what="server ready")
        yield url, proc
    finally:
        proc.terminate()
        threading.Thread(target=proc.communicate, daemon=True).start()  # let it log its end
        proc.wait(30)
        kill_everything(data)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_stalled_log_pipe_holds_lines_not_requests_and_says_what_it_dropped(
    piped_server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, proc = piped_server
    assert proc.stderr is not None
    with httpx.Client(base_url=url, timeout=10) as http:
        # each answer logs a line of about 200 bytes: far past the pipe's 64 KiB and the
        # server's own bound; a write that waited for the reader would hang the next request
        for _ in range(MAX_HELD_BYTES // 150):
            assert http.get("/health/live").status_code == 200
        run = http.post("/v1/runs", json={"job": "true"}, headers={"prefer": "wait=30"})
        assert run.status_code == 200 and run.json()["state"] == "succeeded"
        assert http.get("/health/ready").status_code == 200

        lines: list[bytes] = []
        seen = threading.Event()

        def read() -> None:  # the reader comes back: what was held arrives, then the notice
            for line in proc.stderr:  # type: ignore[union-attr]
                lines.append(line)
                if b"log_lines_dropped" in line:
                    seen.set()

        threading.Thread(target=read, daemon=True).start()
        http.get("/health/live")  # a line after the reader is back
        assert seen.wait(30), "no log_lines_dropped line once the reader caught up"
    records = [json.loads(line) for line in lines if line.startswith(b"{")]  # whole lines
    notice = next(r for r in records if r["event"] == "log_lines_dropped")
    assert notice["count"] > 0
    assert sum(r["event"] == "request" for r in records) * 150 >= MAX_HELD_BYTES // 2
