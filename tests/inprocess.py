"""The whole server in this process: `create_app` with its lifespan (store, executor,
dispatcher, scheduler) on an event loop of its own thread, reached through httpx's ASGI
transport. Milliseconds per request, so property-based tests can send hundreds. `serving`
runs the real supervisor; `faked` a fake clock and a fake executor (tests/fakes.py)."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import httpx

from runyard.api.app import create_app
from runyard.config import Settings
from runyard.runtime import Runtime
from tests import web
from tests.fakes import FakeClock, FakeExecutor

T = TypeVar("T")


class InProcessServer:
    def __init__(self, settings: Settings, runtime: Runtime | None = None) -> None:
        self.app = create_app(settings, runtime)
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
            self.client = web.AsyncClient(
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

    def begin(self, method: str, url: str, **kwargs: Any) -> Future[httpx.Response]:
        """A request left running (Prefer: wait, a stream); its answer from `.result()`."""
        assert self.client is not None
        return asyncio.run_coroutine_threadsafe(
            self.client.request(method, url, **kwargs), self.loop
        )

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


class FakedServer(InProcessServer):
    """An in-process server whose programs are the test's: `clock` moves when told,
    `executor` ends each attempt when told (`finish`)."""

    def __init__(self, settings: Settings, clock: FakeClock, executor: FakeExecutor) -> None:
        self.runtime = Runtime(settings, clock=clock, executor=executor)
        super().__init__(settings, self.runtime)
        self.clock = clock
        self.executor = executor

    def finish(self, run_id: str, attempt: int = 1, exit_code: int = 0, **kw: Any) -> None:
        self.call(self.executor.finish(run_id, attempt, exit_code, **kw))

    def submit(self, job: str, **body: Any) -> dict[str, Any]:
        resp = self.post("/v1/runs", json={"job": job, **body})
        assert resp.status_code in (200, 202), resp.text
        run: dict[str, Any] = resp.json()
        return run

    def run(self, run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = self.get(f"/v1/runs/{run_id}").json()
        return run

    def launched(self) -> list[str]:
        """Run ids in the order their attempts were launched."""
        return [launch.run_id for launch in self.executor.launches]

    def settle(self) -> None:
        """Let the server's loop run what is ready (a claim, a launch, a recorded end)."""
        for _ in range(20):
            self.call(asyncio.sleep(0))


SHM = Path("/dev/shm")
_on_tmpfs: list[Path] = []
# removed when the test process ends (each worker its own): a test may restart its server
# on the same data, so they outlive one `faked`
atexit.register(lambda: [shutil.rmtree(d, ignore_errors=True) for d in _on_tmpfs])


def tmpfs_data(tmp_path: Path) -> Path:
    """The test's data directory, on tmpfs where the machine has one (the database and run
    files without touching a disk): tmp_path/data, a link to it, made on first use."""
    data = tmp_path / "data"
    if not data.exists() and SHM.is_dir() and os.access(SHM, os.W_OK):
        target = Path(tempfile.mkdtemp(prefix="runyard-test-", dir=SHM))
        _on_tmpfs.append(target)
        data.symlink_to(target)
    return data


@contextlib.contextmanager
def faked(
    tmp_path: Path, jobs_dir: Path, clock: FakeClock | None = None, **settings: Any
) -> Iterator[FakedServer]:
    """A server on the real SQLite store (on tmpfs: see tmpfs_data), a fake clock and a
    fake executor: dispatch, retries, admission and schedules in milliseconds."""
    data = tmpfs_data(tmp_path)
    clock = clock or FakeClock()
    server = FakedServer(
        # a lease far longer than any advance of the fake clock: it never lapses in a test
        Settings(data_dir=data, jobs_dir=jobs_dir, **{"capacity": 2, "lease_s": 86400, **settings}),
        clock,
        FakeExecutor(data.resolve(), clock),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
