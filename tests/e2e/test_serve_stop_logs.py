"""A server stopped by SIGTERM (the documented stop) writes every line it logged before it
ends, and still ends by that signal (status 143, as systemd expects). A probe found every such
log ending at "Waiting for application shutdown.": the JSON log holds a turn's lines until the
turn ends, and uvicorn raises SIGTERM again once shut down, whose default action ends the
process before atexit could write them."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable

import pytest

from tests.support import ServerProcess

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
