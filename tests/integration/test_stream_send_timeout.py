"""A stream's send not taken within `stream_send_timeout_s`, in-process: the watcher is dropped
as lagged. One whose connection then takes sends again is told so (`lagged` naming the last
event it was handed) and its response ends; one that takes nothing more is let go. Never an
error out of the app (sse-starlette's SendTimeoutError was, logged as unhandled). The client
is an ASGI one whose `send` takes `passes` body sends, then holds the next until it is cut."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.inprocess import FakedServer, faked
from tests.support import wait_for


@dataclass
class Watcher:
    passes: int  # body sends taken before the one held
    reads_again: bool  # after the held send is cut, are later ones taken?
    body: bytearray = field(default_factory=bytearray)
    first: asyncio.Event = field(default_factory=asyncio.Event)
    sends: int = 0
    ended: bool = False

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] != "http.response.body":
            return
        self.sends += 1
        if self.sends == self.passes + 1 or (self.sends > self.passes and not self.reads_again):
            await asyncio.Event().wait()  # held until the server gives up on it
        self.body.extend(message.get("body", b""))
        self.ended = not message.get("more_body", False)
        self.first.set()

    async def get(self, app: Any, path: str) -> None:
        asked = False

        async def receive() -> dict[str, Any]:
            nonlocal asked
            if not asked:
                asked = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.Event().wait()  # the client never leaves by itself
            return {"type": "http.disconnect"}

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "headers": [(b"host", b"runyard.test")], "client": ("127.0.0.1", 40000),
            "server": ("runyard.test", 80), "root_path": "",
        }  # fmt: skip
        await app(scope, receive, self.send)

    def events(self) -> list[dict[str, str]]:
        found = []
        for block in bytes(self.body).split(b"\r\n\r\n")[:-1]:
            fields = dict(line.partition(": ")[::2] for line in block.decode().split("\r\n"))
            if "data" in fields:
                found.append(fields)
        return found


def finished_run(srv: FakedServer) -> str:
    """A finished run with a log of many chunks (16 KiB each at most)."""
    run_id = srv.submit("talk")["id"]
    wait_for(lambda: srv.launched() == [run_id], what="the run to start")
    srv.executor.paths(run_id).log(1).write_bytes((b"x" * 9999 + b"\n") * 20)
    srv.finish(run_id)
    wait_for(lambda: srv.run(run_id)["state"] == "succeeded", what="the run to end")
    return run_id


def lagged_total(srv: FakedServer) -> int:
    return int(srv.get("/health").json()["streams"]["lagged_total"])


def streamed(
    srv: FakedServer, path: str, watcher: Watcher, then: Callable[[], object] = lambda: None
) -> None:
    """The watcher's whole response; `then` once it has its first event."""
    done = asyncio.run_coroutine_threadsafe(watcher.get(srv.app, path), srv.loop)
    srv.call(asyncio.wait_for(watcher.first.wait(), 10))
    then()
    done.result(timeout=30)  # the app returns, and raises nothing


ROUTES = [  # (path under the run, or the feed; body sends taken before the held one)
    ("/v1/runs/{id}/logs/stream", 3),  # `attempt`, then two chunks of the log
    ("/v1/runs/{id}/events", 1),  # the first state event
    ("/v1/events", 1),  # the feed's `ready`; the held one is a submit's
]


@pytest.mark.parametrize(("route", "passes"), ROUTES)
def test_a_watcher_that_reads_again_is_told_it_lagged_from_its_last_event(
    tmp_path: Path, write_job: Callable[[str, str], Path], jobs_dir: Path, route: str, passes: int
) -> None:
    write_job("talk", 'command = ["true"]\n')
    with faked(tmp_path, jobs_dir, stream_send_timeout_s=0.2) as srv:
        run_id = finished_run(srv)
        watcher = Watcher(passes, reads_again=True)
        feed = route == "/v1/events"
        streamed(
            srv,
            route.format(id=run_id),
            watcher,
            (lambda: srv.submit("talk")) if feed else lambda: None,
        )
        assert lagged_total(srv) == 1  # counted as the response ended, not at a later snapshot
    events = watcher.events()
    assert len(events) == passes + 1
    assert events[-1]["event"] == "lagged"
    assert watcher.ended  # the response ended after it
    if not feed:  # the feed is not resumable: its lagged says to re-read the list
        handed = [int(e["id"]) for e in events[:-1] if "id" in e]
        assert json.loads(events[-1]["data"])["last_id"] == handed[-1]


def test_a_watcher_that_takes_nothing_more_is_let_go(
    tmp_path: Path, write_job: Callable[[str, str], Path], jobs_dir: Path
) -> None:
    write_job("talk", 'command = ["true"]\n')
    with faked(tmp_path, jobs_dir, stream_send_timeout_s=0.2) as srv:
        run_id = finished_run(srv)
        watcher = Watcher(3, reads_again=False)
        streamed(srv, f"/v1/runs/{run_id}/logs/stream", watcher)
        assert lagged_total(srv) == 1  # counted as the response ended, not at a later snapshot
    assert [e["event"] for e in watcher.events()] == ["attempt", "log", "log"]
    assert not watcher.ended  # nothing more was taken: no farewell, no end


class HoldsItsLagged(Watcher):
    """Takes every send but the `lagged` event's, which it holds until it is cut."""

    async def send(self, message: dict[str, Any]) -> None:
        if b"event: lagged" in message.get("body", b""):
            await asyncio.Event().wait()
        await super().send(message)


def test_a_watcher_its_buffer_dropped_is_counted_once_though_it_then_stalls(
    tmp_path: Path,
) -> None:
    """Dropped by its buffer (counted there), the watcher's stream sends it `lagged`; its
    connection not taking that in time is the same drop, not a second one (it counted twice)."""
    from sse_starlette import ServerSentEvent

    from runyard.api.sse import sse_response
    from runyard.config import Settings
    from runyard.streams.hub import StreamHub

    async def dropped_by_its_buffer() -> Any:
        yield ServerSentEvent(data="a", event="log", id="1")
        yield ServerSentEvent(data='{"last_id": 1}', event="lagged")

    async def main() -> tuple[int, list[dict[str, str]]]:
        settings = Settings(
            data_dir=tmp_path / "data", jobs_dir=tmp_path, stream_send_timeout_s=0.2
        )
        hub = StreamHub(None, lambda _: None)  # type: ignore[arg-type]
        watcher = HoldsItsLagged(passes=10**6, reads_again=False)
        farewell = ServerSentEvent(data="{}", event="lagged")
        stream = sse_response(settings, hub, dropped_by_its_buffer(), lambda _: farewell)
        await watcher.get(stream, "/v1/runs/x/logs/stream")
        return hub.lagged_total, watcher.events()

    counted, events = asyncio.run(main())
    assert [e["event"] for e in events] == ["log"]  # its `lagged` was never taken
    assert counted == 0  # here: its buffer's drop is counted by what dropped it
