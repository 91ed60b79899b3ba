"""The feed's fan-out, in-process: an item offered to many watchers is serialised and framed
once, and every watcher is handed those same bytes. Each watcher serialised it again (JSON,
then sse-starlette's encoding): with 300 watchers a 10,000-run batch took ten times as long,
and the health check 40 times as long. The watchers here are ASGI clients of the real app
that read everything they are sent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sse_starlette import ServerSentEvent

from tests.inprocess import FakedServer, faked

WATCHERS = 5
ITEMS = 40
PAUSE_S = 0.08  # longer than the feed gathers a watcher's items (50 ms): the next goes alone


@dataclass
class Reader:
    """A feed watcher whose connection takes everything at once."""

    body: bytearray = field(default_factory=bytearray)
    sent: asyncio.Event = field(default_factory=asyncio.Event)
    leave: asyncio.Event = field(default_factory=asyncio.Event)
    got_all: asyncio.Event = field(default_factory=asyncio.Event)  # every item offered

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            self.body.extend(message.get("body", b""))
            self.sent.set()
            if self.body.count(b"fan-out") >= ITEMS:
                self.got_all.set()

    async def receive(self) -> dict[str, Any]:
        if not hasattr(self, "_asked"):
            self._asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def get(self, app: Any) -> None:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": "/v1/events", "raw_path": b"/v1/events",
            "query_string": b"", "headers": [(b"host", b"runyard.test")],
            "client": ("127.0.0.1", 40000), "server": ("runyard.test", 80), "root_path": "",
        }  # fmt: skip
        await app(scope, self.receive, self.send)

    def events(self) -> list[tuple[str, str]]:
        found = []
        for block in bytes(self.body).split(b"\r\n\r\n")[:-1]:
            fields = dict(line.partition(": ")[::2] for line in block.decode().split("\r\n"))
            found.append((fields["event"], fields["data"]))
        return found


def counting(monkeypatch: pytest.MonkeyPatch, offered: list[dict[str, Any]]) -> dict[str, int]:
    """Counts of the offered items' JSON serialisations and of sse-starlette's encodings of
    them (an encoding overridden by a subclass, bytes made before, is not one)."""
    counts = {"json": 0, "sse": 0}
    dumps, encode = json.dumps, ServerSentEvent.encode

    def counted_dumps(obj: Any, *args: Any, **kw: Any) -> str:
        counts["json"] += any(obj is o for o in offered)
        return dumps(obj, *args, **kw)

    def counted_encode(self: ServerSentEvent) -> bytes:
        counts["sse"] += "fan-out" in str(self.data)
        return encode(self)

    monkeypatch.setattr(json, "dumps", counted_dumps)
    monkeypatch.setattr(ServerSentEvent, "encode", counted_encode)
    return counts


def watched(srv: FakedServer, readers: list[Reader]) -> list[asyncio.Future[None]]:
    async def subscribed() -> None:
        for reader in readers:
            await asyncio.wait_for(reader.sent.wait(), 10)  # its `ready`: subscribed

    tasks = [asyncio.run_coroutine_threadsafe(r.get(srv.app), srv.loop) for r in readers]
    srv.call(subscribed())
    return tasks  # type: ignore[return-value]


def test_an_item_is_serialised_and_framed_once_for_all_its_watchers(
    tmp_path: Path,
    write_job: Callable[[str, str], Path],
    jobs_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_job("talk", 'command = ["true"]\n')
    with faked(tmp_path, jobs_dir) as srv:
        feed = srv.runtime.hub.feed
        readers = [Reader() for _ in range(WATCHERS)]
        tasks = watched(srv, readers)
        assert len(feed.subscribers) == WATCHERS
        offered = [{"id": f"run-{i}", "progress": {"message": "fan-out"}} for i in range(ITEMS)]
        counts = counting(monkeypatch, offered)

        async def offer_all() -> None:
            for i, data in enumerate(offered):
                feed.offer("progress", data)
                if i % 7 == 0:  # some sent alone, some gathered with the next ones
                    await asyncio.sleep(PAUSE_S)
            await asyncio.wait_for(asyncio.gather(*(r.got_all.wait() for r in readers)), 10)

        srv.call(offer_all())
        assert counts == {"json": ITEMS, "sse": ITEMS}  # once each, not once per watcher
        expected = [("progress", json.dumps(data)) for data in offered]
        for reader in readers:  # each got all of them, once, in order, after its `ready`
            assert reader.events() == [("ready", "{}"), *expected]
        for reader in readers:
            srv.loop.call_soon_threadsafe(reader.leave.set)
        for task in tasks:
            task.result(timeout=10)
        assert not feed.subscribers


def test_each_watcher_is_handed_the_same_item_and_one_that_fills_its_buffer_lags() -> None:
    """What is appended to each watcher's buffer is one shared item; a watcher whose buffer
    is full is dropped at once and gets what it had, in order, then `lagged`, while the others
    go on."""
    from runyard.streams.feed import RunFeed
    from runyard.streams.subscriber import Lagged

    async def main() -> None:
        feed = RunFeed(max_buffer_bytes=150)  # room for two of these items (55 bytes each)
        reading, stalled = feed.subscribe(), feed.subscribe()
        feed.offer("run", {"id": "a", "state": "running"})
        assert reading.items[0] is stalled.items[0]  # one item, made once
        await reading.drain()
        for state in ("succeeded", "queued", "running"):  # the stalled one's third is over
            feed.offer("run", {"id": "a", "state": state})
            await reading.drain()
        assert feed.subscribers == {reading} and feed.lagged_total == 1
        got = [item async for item in feed.follow(stalled)]
        frames, lagged = b"".join(got[:-1]), got[-1]
        assert lagged == Lagged(0)
        states = [json.loads(line[6:])["state"] for line in frames.split(b"\r\n")[1::3]]
        assert states == ["running", "succeeded"]
        assert stalled not in feed.subscribers

    asyncio.run(main())
