"""A run deleted while its log is streamed: the log is read to its end all the same, and the
stream ends with its `end`, as a download of an artifact finishes after its run expired. The
replay opened the file again for each piece, so a deletion (DELETE, or retention) cut it where
it fell, and the stream closed with no `end` (a probe: 26.6 MB of 40, as a dropped
connection would)."""

from __future__ import annotations

import asyncio
import json

import pytest
from httpx_sse import aconnect_sse

from runyard.models import RunState
from tests import web
from tests.sse import Watched

pytestmark = pytest.mark.e2e
SIZE = 20_000_000  # far past what the kernel's buffers hold: most of it is read after
BIG = f'command = ["sh", "-c", "yes 0123456789012345678 | head -c {SIZE}"]\n'


def test_a_log_streamed_while_its_run_is_deleted_is_read_whole_and_ends(
    start_server, write_job, jobs_dir
) -> None:
    write_job("big", BIG)
    server = start_server(jobs_dir)
    with server.client() as c:
        run = c.submit("big")
        assert server.wait_run(c, run.id).state is RunState.SUCCEEDED
    run_url = f"{server.url}/v1/runs/{run.id}"
    url = f"{run_url}/logs/stream"

    async def watch() -> Watched:
        got = Watched()
        async with (
            web.AsyncClient(timeout=60) as client,
            aconnect_sse(client, "GET", url) as source,
        ):
            async for sse in source.aiter_sse():
                if sse.event == "log":
                    got.data += sse.data.encode()
                    if len(got.data) >= 1_000_000 and got.last_id is None:
                        gone = await asyncio.to_thread(web.delete, run_url)
                        assert gone.status_code == 204, gone.text
                        got.last_id = "deleted"
                elif sse.event == "end":
                    got.end = json.loads(sse.data)
        return got

    got = asyncio.run(watch())
    assert got.last_id == "deleted"
    assert web.get(run_url).status_code == 404
    assert len(got.data) == SIZE
    assert got.end is not None and got.end["state"] == "succeeded", got.end
