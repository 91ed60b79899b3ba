"""Stream lag in-process: a watcher that stops reading is dropped with `lagged` once its buffer
is full, while another watcher of the same log gets every byte and the run's end. The slow
watcher is an ASGI client whose `send` blocks until the test lets it go."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from tests.inprocess import FakedServer, faked
from tests.support import wait_for

LINE = "x" * 1023 + "\n"  # 1 KiB
LINES = 2048  # 2 MiB: four times the smallest buffer a watcher may have
STEP = 128  # lines written at a time, each step read by the fast watcher before the next


async def watch(
    app: FastAPI, path: str, body: bytearray, first: asyncio.Event, gate: asyncio.Event
) -> None:
    """GET `path` into `body` (readable as it grows), taking the first chunk at once and then
    none until `gate` opens (a watcher that stops reading)."""
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client never leaves by itself
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            body.extend(message.get("body", b""))
            if not first.is_set():
                first.set()
            else:
                await gate.wait()

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "headers": [(b"host", b"runyard.test")], "client": ("127.0.0.1", 40000),
        "server": ("runyard.test", 80), "root_path": "",
    }  # fmt: skip
    await app(scope, receive, send)


def lagged_total(srv: FakedServer) -> int:
    return int(srv.get("/health").json()["streams"]["lagged_total"])


def test_a_slow_watcher_is_dropped_with_lagged_and_others_get_everything(
    tmp_path: Path, write_job: Callable[[str, str], Path], jobs_dir: Path
) -> None:
    write_job("chatter", 'command = ["true"]\n')
    with faked(tmp_path, jobs_dir, stream_buffer_kb=512) as srv:
        run_id = srv.submit("chatter")["id"]
        wait_for(lambda: srv.launched() == [run_id], what="the run to start")
        path = f"/v1/runs/{run_id}/logs/stream"
        slow_body, fast_body = bytearray(), bytearray()
        first, gate = asyncio.Event(), asyncio.Event()
        fast_first, open_gate = asyncio.Event(), asyncio.Event()
        srv.loop.call_soon_threadsafe(open_gate.set)
        slow = asyncio.run_coroutine_threadsafe(
            watch(srv.app, path, slow_body, first, gate), srv.loop
        )
        fast = asyncio.run_coroutine_threadsafe(
            watch(srv.app, path, fast_body, fast_first, open_gate), srv.loop
        )

        async def both_started() -> None:
            await asyncio.wait_for(asyncio.gather(first.wait(), fast_first.wait()), 10)

        srv.call(both_started())
        log = srv.executor.paths(run_id).log(1)
        for written in range(STEP, LINES + 1, STEP):
            with log.open("a") as out:
                out.write(LINE * STEP)
            # a watcher that keeps reading never holds more than one step: it never lags
            wait_for(lambda n=written: bytes(fast_body).count(b"x" * 1023) >= n,
                     what=f"the fast watcher to read {written} lines")  # fmt: skip
        srv.finish(run_id)
        fast.result(timeout=20)
        srv.loop.call_soon_threadsafe(gate.set)
        slow.result(timeout=20)
        # counted once the attempt's tailer retires, with the run's end
        wait_for(lambda: lagged_total(srv) >= 1, what="the lag to be counted")
    assert b"event: lagged" in slow_body
    assert b"event: end" not in slow_body  # dropped: told to resume, not that the run ended
    assert b"event: lagged" not in fast_body
    assert b"event: end" in fast_body
    assert fast_body.count(b"x" * 1023) == LINES  # every line, none lost or doubled
