"""File-change notification: one inotify descriptor for the whole process, on the event loop.

Each running attempt watches its run directory (not its workspace). Where inotify is not
available, or a watch cannot be added (limits), the directory is polled on a timer instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

try:
    from asyncinotify import Inotify, Mask
except ImportError:  # pragma: no cover  (not Linux)
    Inotify = None  # type: ignore[assignment,misc]

Callback = Callable[[], None]


@dataclass(eq=False)
class Handle:
    callback: Callback
    watch: object | None = None  # an asyncinotify Watch, or None when polled


class FileNotifier:
    def __init__(self, poll_interval_s: float = 0.5, *, inotify: bool = True) -> None:
        self.poll_interval_s = poll_interval_s
        self.use_inotify = inotify  # False: every directory is polled (a shared filesystem)
        self._inotify: Inotify | None = None
        # the kernel gives one watch per directory, however often it is added: it is
        # removed only when the last handle on it goes
        self._by_watch: dict[object, set[Handle]] = {}
        self._polled: set[Handle] = set()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def mode(self) -> str:
        return "inotify" if self._inotify is not None else "polling"

    def start(self) -> None:
        if Inotify is not None and self.use_inotify:
            try:
                self._inotify = Inotify()
                self._tasks.append(asyncio.create_task(self._read(), name="inotify"))
            except OSError as exc:
                log.warning("inotify_unavailable", error=str(exc))
        self._tasks.append(asyncio.create_task(self._poll(), name="notify-poll"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._inotify is not None:
            self._inotify.close()

    def watch(self, directory: Path, callback: Callback) -> Handle:
        handle = Handle(callback)
        if self._inotify is not None:
            mask = Mask.MODIFY | Mask.CREATE | Mask.MOVED_TO | Mask.CLOSE_WRITE
            try:
                handle.watch = self._inotify.add_watch(directory, mask)
            except OSError as exc:
                log.warning("watch_failed_polling_instead", path=str(directory), error=str(exc))
            else:
                self._by_watch.setdefault(handle.watch, set()).add(handle)
                return handle
        self._polled.add(handle)
        return handle

    def unwatch(self, handle: Handle) -> None:
        self._polled.discard(handle)
        if handle.watch is not None and self._inotify is not None:
            handles = self._by_watch.get(handle.watch, set())
            handles.discard(handle)
            if not handles:
                self._by_watch.pop(handle.watch, None)
                with contextlib.suppress(OSError, ValueError, KeyError):
                    self._inotify.rm_watch(handle.watch)  # type: ignore[arg-type]
            handle.watch = None

    @property
    def watches(self) -> int:
        """Kernel watches held (inotify) plus directories polled instead."""
        return len(self._by_watch) + len(self._polled)

    async def _read(self) -> None:
        if self._inotify is None:
            return
        async for event in self._inotify:
            handles = self._by_watch.get(event.watch) if event.watch is not None else None
            for handle in list(handles or ()):
                handle.callback()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)  # only for what inotify cannot watch
            for handle in list(self._polled):
                handle.callback()
