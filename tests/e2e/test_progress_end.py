"""A program's last progress line, written without its newline just before it exits, is its
progress (a probe: neither taken nor counted), and a line's own `attempt` never overrides the
attempt's number: what the run holds and what its events say agree."""

from __future__ import annotations

import asyncio
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
