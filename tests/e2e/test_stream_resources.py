"""Streams give back what they took: a tailer and an inotify watch live exactly as long as
their attempt runs, however short it is and whoever watches it."""

from __future__ import annotations

import asyncio
import json

import pytest
from httpx_sse import aconnect_sse

from tests import web
from tests.e2e.conftest import _inotify_watches
from tests.support import ServerProcess, wait_for

pytestmark = pytest.mark.e2e
RUNS = 150
TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}


def tailers(server: ServerProcess) -> int:
    return int(web.get(f"{server.url}/health", timeout=10).json()["streams"]["tailers"])


def test_short_runs_under_a_feed_watcher_leave_no_tailer_or_watch(
    start_server, write_job, jobs_dir
) -> None:
    """Defect 10: with a /v1/events watcher open every running attempt is tailed; a short
    program's end, recorded while its start (and its tailer) was still being set up, left
    the tailer, its task and its watch behind for good."""
    write_job("quick", 'command = ["true"]\n')
    server = start_server(jobs_dir, capacity=8)
    assert server.proc is not None
    pid = server.proc.pid
    baseline = _inotify_watches(pid)
    assert tailers(server) == 0

    def gave_back() -> bool:
        return tailers(server) == 0 and _inotify_watches(pid) == baseline

    async def main() -> int:
        async with (
            web.AsyncClient(base_url=server.url, timeout=60) as http,
            aconnect_sse(http, "GET", "/v1/events") as source,
        ):
            events = source.aiter_sse()
            assert (await anext(events)).event == "ready"
            body = {"job": "quick", "iterations": RUNS}
            assert (await http.post("/v1/batches", json=body)).status_code == 202
            ended = 0
            async for sse in events:
                if sse.event == "run" and json.loads(sse.data)["state"] in TERMINAL:
                    ended += 1
                    if ended == RUNS:
                        break
            # still watching: nothing runs, so nothing may be tailed or watched
            await asyncio.to_thread(wait_for, gave_back, 15, "tailers and watches given back")
            return ended

    assert asyncio.run(main()) == RUNS
    wait_for(gave_back, 15, "tailers and watches given back after the watcher left")
