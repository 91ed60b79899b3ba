"""Spawns the server gave up on, whose answer still comes.

The server waits for a spawn's answer for its timeout plus a margin; then the run goes back to
the queue (a supervisor that does not answer must not hold it `starting`). A request the
supervisor reads past its deadline is refused. But one it read in time may be answered after
that: the supervisor was stopped (SIGSTOP: any process of its user may send it) or slowed
between the spawn and its answer, or the server's own loop was. That program belongs to no
attempt any more: its answer is still listened for, and the program it names is stopped
(`killed_by` "given_up"). Until it has ended, the supervisor refuses to start another attempt
of its run (supervisor.op_spawn), so no run ever has two live attempts.

A supervisor that goes away before it answers may have started the program all the same: it
is looked for by its attempt key (one scan of /proc for every such spawn at the time) and
killed before the run may be retried.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Collection
from typing import Any

import structlog

from runyard.background import TaskGroup
from runyard.execution.supervisor_client import Sent, SupervisorClient, SupervisorUnavailableError

log = structlog.get_logger(__name__)

REASON = "given_up"


class LateSpawns:
    def __init__(
        self, client: SupervisorClient, kill_by_keys: Callable[[Collection[str]], object]
    ) -> None:
        self._client = client
        self._kill_by_keys = kill_by_keys  # blocking: a scan of /proc
        self._tasks = TaskGroup("late-spawn")
        self._doomed: set[str] = set()  # attempt keys the next scan kills
        self._scan: asyncio.Task[None] | None = None
        self._stopped = False

    def given_up(self, sent: Sent, key: str) -> None:
        """`reply` timed out on spawn `sent` of attempt `key`: settled when it answers."""
        sent.future.add_done_callback(functools.partial(self._answered, sent, key))

    async def went_away(self, key: str) -> None:
        """The supervisor went away before it answered the spawn of attempt `key`: whatever
        runs under that key is killed before this returns."""
        self._doomed.add(key)
        if self._scan is None or self._scan.done():
            self._scan = asyncio.create_task(self._kill_doomed(), name="late-spawn-kill")
        await asyncio.shield(self._scan)

    async def stop(self) -> None:
        """Before the connection closes: a program started under a spawn still unanswered
        stays the supervisor's, and the next start's reconcile fences it (as any program of
        an attempt that is not this server's)."""
        self._stopped = True
        await self._tasks.cancel()

    def _answered(self, sent: Sent, key: str, future: asyncio.Future[dict[str, Any]]) -> None:
        self._client.forget(sent)
        if future.cancelled():
            return
        failed = future.exception()  # retrieved here, whatever happens next
        if self._stopped:
            return
        if failed is not None:
            self._tasks.start(self.went_away(key))
        elif future.result().get("ok"):
            log.warning("late_spawn_stopped", attempt=key, pid=future.result().get("pid"))
            self._tasks.start(self._stop(key))

    async def _stop(self, key: str) -> None:
        try:
            await self._client.request({"op": "signal", "key": key, "reason": REASON})
        except SupervisorUnavailableError:
            await self.went_away(key)

    async def _kill_doomed(self) -> None:
        while self._doomed:  # keys added during a scan are killed by the next one
            keys, self._doomed = self._doomed, set()
            await asyncio.to_thread(self._kill_by_keys, keys)
