"""A server stopped by SIGTERM (the documented stop) writes every line it logged before it
ends, and still ends by that signal (status 143, as systemd expects). A probe found every such
log ending at "Waiting for application shutdown.": the JSON log holds a turn's lines until the
turn ends, and uvicorn raises SIGTERM again once shut down, whose default action ends the
process before atexit could write them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import ServerProcess, free_port, kill_everything

pytestmark = pytest.mark.e2e


def test_sigterm_keeps_the_last_log_lines(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()
    assert server.proc is not None
    pid = server.proc.pid
    assert server.stop(signal.SIGTERM) == -signal.SIGTERM
    lines = server.log_path.read_text().splitlines()
    events = [json.loads(line)["event"] for line in lines if line.startswith("{")]
    tail = "\n".join(lines[-6:])
    assert "Shutting down" in events, tail
    shutdown = events[events.index("Shutting down") :]
    assert "Application shutdown complete." in shutdown, tail
    assert events[-1] == f"Finished server process [{pid}]", tail


def test_a_stop_asked_for_while_the_server_starts_stops_it(
    tmp_path: Path, write_job: Callable[[str, str], Path], jobs_dir: Path
) -> None:
    """A probe: a server started in the background (SIGINT ignored, as a shell starts one)
    and sent SIGINT while it built its app, before uvicorn listened for signals, lost it and
    ran on for good. The stop is kept and acted on once the server can: it starts, then
    stops cleanly."""
    write_job("t", 'command = ["true"]\n')
    data = tmp_path / "data"
    argv = [sys.executable, "-m", "runyard", "serve", "--jobs", str(jobs_dir),
            "--data-dir", str(data), "--port", str(free_port())]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # noqa: PLW1509
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        said = []
        for line in proc.stderr:  # "starting": serving has begun, uvicorn not yet
            said.append(line)
            if b'"starting"' in line:
                proc.send_signal(signal.SIGINT)
                break
        rest = proc.communicate(timeout=30)[1]
        events = [json.loads(raw)["event"] for raw in [*said, *rest.splitlines()]
                  if raw.startswith(b"{")]  # fmt: skip
        assert proc.returncode == 0, events[-5:]
        assert "Application shutdown complete." in events, events[-5:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_everything(data)
