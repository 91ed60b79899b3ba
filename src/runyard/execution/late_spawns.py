"""Spawns the server gave up on, whose answer still comes.

The server waits for a spawn's answer for its timeout plus a margin; then the run goes back to
the queue (a supervisor that does not answer must not hold it `starting`). A request the
supervisor reads past its deadline is refused. But one it read in time may be answered after
that: the supervisor was stopped (SIGSTOP: any process of its user may send it) or slowed
between the spawn and its answer. That program belongs to no attempt any more; its answer is
still awaited, and the program it names is stopped (`killed_by` "given_up"). Until it has
ended, the supervisor refuses to start another attempt of its run (supervisor.op_spawn), so no
run ever has two live attempts.

A supervisor that goes away before it answers may have started the program all the same: it
is looked for by its attempt key and killed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from runyard.background import TaskGroup
from runyard.execution.supervisor_client import Sent, SupervisorClient, SupervisorUnavailableError

log = structlog.get_logger(__name__)

REASON = "given_up"


class LateSpawns:
    def __init__(self, client: SupervisorClient, kill_by_key: Callable[[str], object]) -> None:
        self._client = client
        self._kill_by_key = kill_by_key  # blocking: a scan of /proc
        self._tasks = TaskGroup("late-spawn")

    def given_up(self, sent: Sent, key: str) -> None:
        """`reply` timed out on spawn `sent` of attempt `key`: settle it when it answers."""
        self._tasks.start(self._settle(sent, key))

    async def went_away(self, key: str) -> None:
        """The supervisor went away before it answered the spawn of attempt `key`."""
        await asyncio.to_thread(self._kill_by_key, key)

    async def stop(self) -> None:
        # a program started meanwhile is the supervisor's still: the next start's reconcile
        # fences it, as any program of an attempt that is not this server's
        await self._tasks.cancel()

    def __len__(self) -> int:
        return len(self._tasks)

    async def _settle(self, sent: Sent, key: str) -> None:
        try:
            answer = await self._client.late(sent)
        except SupervisorUnavailableError:
            await self.went_away(key)
            return
        if not answer.get("ok"):
            return  # refused (read past its deadline), or not started: nothing runs
        log.warning("late_spawn_stopped", attempt=key, pid=answer.get("pid"))
        try:
            await self._client.request({"op": "signal", "key": key, "reason": REASON})
        except SupervisorUnavailableError:
            await self.went_away(key)
