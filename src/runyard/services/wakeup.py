"""A wake-up call: one side waits for it, anyone may give it. Built before both sides, so
who gives it needs no reference to who waits (the dispatcher's queue, health, reconcile)."""

from __future__ import annotations

import asyncio


class Wakeup:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()
