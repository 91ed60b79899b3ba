"""A program's last progress line, written without its newline just before it exits, is its
progress (a probe: neither taken nor counted), and a line's own `attempt` never overrides the
attempt's number: what the run holds and what its events say agree."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests import web
from tests.sse import watch_events
from tests.support import wait_for

pytestmark = pytest.mark.e2e

LAST = r"""
command = ["sh", "-c", '''
printf '%s\n' '{{"fraction": 0.5, "attempt": "mine"}}' >> "$RUNYARD_PROGRESS_FILE"
printf '%s' '{{"fraction": 0.9, "message": "last"}}' >> "$RUNYARD_PROGRESS_FILE"
''']
"""


def test_a_last_line_without_newline_is_the_runs_progress(
    start_server, write_job, jobs_dir: Path
) -> None:
    write_job("last", LAST)
    server = start_server(jobs_dir)
    run_id = web.post(f"{server.url}/v1/runs", json={"job": "last"}).json()["id"]
    wait_for(
        lambda: web.get(f"{server.url}/v1/runs/{run_id}").json()["state"] == "succeeded",
        what="the run to end",
    )
    run = web.get(f"{server.url}/v1/runs/{run_id}").json()
    assert run["progress"] == {"fraction": 0.9, "message": "last"}
    assert run["progress_skipped"] == 0

    async def events() -> list[dict[str, object]]:
        async with web.AsyncClient(timeout=60) as client:
            watched = await watch_events(client, f"{server.url}/v1/runs/{run_id}/events")
        return watched.events

    progress = [e["data"] for e in asyncio.run(events()) if e["kind"] == "progress"]
    assert progress == [{"fraction": 0.5, "attempt": 1},
                        {"fraction": 0.9, "message": "last", "attempt": 1}]  # fmt: skip


SPARSE = r"""
command = ["sh", "-c", '''
echo '{{"fraction": 0.1}}' >> "$RUNYARD_PROGRESS_FILE"
truncate -s 1T "$RUNYARD_PROGRESS_FILE"
printf '\n{{"fraction": 0.2}}\n' >> "$RUNYARD_PROGRESS_FILE"
''']
"""


def test_a_sparse_progress_file_of_a_terabyte_is_read_at_its_end(
    start_server, write_job, jobs_dir: Path
) -> None:
    """A probe: the run stayed `running` for minutes after its program ended (its end waited
    on reading every zero), reads of it hung, and the server could not stop."""
    write_job("sparse", SPARSE)
    server = start_server(jobs_dir)
    run_id = web.post(f"{server.url}/v1/runs", json={"job": "sparse"}).json()["id"]
    wait_for(
        lambda: (
            web.get(f"{server.url}/v1/runs/{run_id}", timeout=10).json()["state"] == "succeeded"
        ),
        what="the run to end",
    )
    assert web.get(f"{server.url}/v1/runs/{run_id}").json()["progress"] == {"fraction": 0.2}
    assert server.stop(timeout=30) == -signal.SIGTERM  # and it stops as ever, at once


SPARSE_LOG = """
command = ["sh", "-c", "sleep 2; python3 -c 'import os; os.ftruncate(1, 1 << 40)'"]
"""


@pytest.mark.timeout(120)
def test_a_terabyte_log_with_a_watcher_does_not_hold_the_runs_end(
    start_server, write_job, jobs_dir: Path
) -> None:
    """A review: with a watcher, the end of an attempt read its log to the end first (a
    sparse terabyte: four million reads) before recording it. Past 64 MiB the watcher is
    told to resume from the file (`lagged`), and the end is recorded."""
    write_job("sparselog", SPARSE_LOG)
    server = start_server(jobs_dir)
    run_id = web.post(f"{server.url}/v1/runs", json={"job": "sparselog"}).json()["id"]
    with web.stream("GET", f"{server.url}/v1/runs/{run_id}/logs/stream", timeout=60) as resp:
        assert resp.status_code == 200
        shown = ("event: log.b64", "event: log", "event: attempt")  # the log and its start
        told = next(
            line for line in resp.iter_lines() if line.startswith("event: ") and line not in shown
        )
    assert told in ("event: lagged", "event: end"), told
    wait_for(
        lambda: web.get(f"{server.url}/v1/runs/{run_id}", timeout=10).json()["state"]
        == "succeeded",
        timeout=60, what="the run's end",
    )  # fmt: skip
