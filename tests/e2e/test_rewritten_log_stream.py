"""A log its program rewrites while it is watched (cut back to nothing, written again): its
watchers are told `lagged` with `last_id` 0, resume from the start. That event had no id, so a
client resuming from the last id it had read (the dashboard's, any EventSource) asked for an
offset past the new end and got nothing more; `runyard logs -f` resumed from its own offset
the same way. Both showed none of the rewritten log (a probe)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from runyard.models import RunState
from tests import web
from tests.support import ServerProcess, open_gate

pytestmark = pytest.mark.e2e

REWRITES = (
    'command = ["sh", "-c", "for i in $(seq 0 29); do echo before $i; done; '
    "while [ ! -e go ]; do sleep 0.02; done; truncate -s 0 /proc/self/fd/1; "
    'for i in $(seq 0 9); do echo after $i; done; sleep 0.5"]\n'
)


@pytest.fixture
def server(start_server, write_job, jobs_dir) -> ServerProcess:
    write_job("rewrites", REWRITES)
    return start_server(jobs_dir)


def test_the_lagged_event_of_a_rewritten_log_resumes_from_its_start(server: ServerProcess) -> None:
    with server.client() as c:
        run = c.submit("rewrites")
    url = f"{server.url}/v1/runs/{run.id}/logs/stream"
    with web.Client(timeout=30) as http, http.stream("GET", url) as resp:
        block: list[str] = []  # the event being read, its lines
        for line in resp.iter_lines():
            if "before 29" in line:
                open_gate(server.data_dir, run.id)
            if line:
                block.append(line)
            elif "event: lagged" in block:
                break
            else:
                block = []
    assert 'data: {"last_id": 0, "detail": "this watcher fell behind; resume"}' in block
    assert "id: 0" in block, block  # where a client resuming by itself starts again


def test_logs_follow_shows_the_rewritten_log(server: ServerProcess) -> None:
    with server.client() as c:
        run = c.submit("rewrites")
        shown = []
        with subprocess.Popen(
            [sys.executable, "-m", "runyard", "logs", "-f", run.id, "--server", server.url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ) as follow:  # fmt: skip
            assert follow.stdout is not None and follow.stderr is not None
            for line in follow.stdout:
                shown.append(line)
                if line == "before 29\n":
                    open_gate(server.data_dir, run.id)
            assert follow.wait(60) == 0, follow.stderr.read()
        assert server.wait_run(c, run.id).state is RunState.SUCCEEDED
    assert shown[-10:] == [f"after {i}\n" for i in range(10)], shown
