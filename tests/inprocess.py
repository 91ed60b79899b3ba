"""The whole server in this process: `create_app` with its lifespan (store, real supervisor,
dispatcher, scheduler) on an event loop of its own thread, reached through httpx's ASGI
transport. Milliseconds per request, so property-based tests can send hundreds."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from runyard.api.app import create_app
from runyard.config import Settings

T = TypeVar("T")


class InProcessServer:
    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._lifespan: contextlib.AbstractAsyncContextManager[Any] | None = None
        self.client: httpx.AsyncClient | None = None

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def start(self) -> InProcessServer:
        self.thread.start()

        async def enter() -> None:
            self._lifespan = self.app.router.lifespan_context(self.app)
            await self._lifespan.__aenter__()
            self.client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=self.app), base_url="http://runyard.test"
            )

        self.call(enter())
        return self

    def stop(self) -> None:
        async def leave() -> None:
            if self.client is not None:
                await self.client.aclose()
            if self._lifespan is not None:
                await self._lifespan.__aexit__(None, None, None)

        try:
            self.call(leave())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        assert self.client is not None
        return self.call(self.client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


@contextlib.contextmanager
def serving(
    tmp_path: Path, jobs_dir: Path, database_url: str | None = None, **settings: Any
) -> Iterator[InProcessServer]:
    server = InProcessServer(
        Settings(
            data_dir=tmp_path / "data", jobs_dir=jobs_dir, database_url=database_url,
            capacity=2, **settings,
        )
    )  # fmt: skip
    server.start()
    try:
        yield server
    finally:
        server.stop()
