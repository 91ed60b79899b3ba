"""Spawns the server gave up on, whose answer still comes.

The server waits for a spawn's answer for its timeout plus a margin; then the run goes back to
the queue (a supervisor that does not answer must not hold it `starting`). A request the
supervisor reads past its deadline is refused. But one it read in time may be answered after
that: the supervisor was stopped (SIGSTOP: any process of its user may send it) or slowed
between the spawn and its answer, or the server's own loop was. That program belongs to no
attempt any more: its answer is still listened for, and the program it names is stopped
(`killed_by` "given_up"). Until it has ended, the supervisor refuses to start another attempt
of its run (supervisor.op_spawn), so no run ever has two live attempts.

A supervisor that goes away before it answers may have started the program all the same; one
that goes away while it stops such a program (a program may take its whole grace, or ignore
SIGTERM) leaves it running with nobody to kill it: either is looked for by its attempt key
(one scan of /proc for every such key at the time) and killed before the loss is handled,
so before its run may be retried.
"""

from __future__ import annotations

import asyncio
import contextlib
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
        self._unanswered: set[str] = set()  # given up, no answer yet
        self._stopping: set[str] = set()  # answered late and told to stop: not ended yet
        self._stopped = False

    def given_up(self, sent: Sent, key: str) -> None:
        """`reply` timed out on spawn `sent` of attempt `key`: settled when it answers."""
        self._unanswered.add(key)
        sent.future.add_done_callback(functools.partial(self._answered, sent, key))

    def ended(self, key: str) -> None:
        """Attempt `key`'s end was heard (any attempt's: most are none of ours), perhaps
        before its late answer was (read in the same turn): nothing of it is left to stop."""
        self._stopping.discard(key)
        self._unanswered.discard(key)

    async def went_away(self, key: str) -> None:
        """The supervisor went away before it answered the spawn of attempt `key`: whatever
        runs under that key is killed before this returns."""
        await self._kill({key})

    async def lost(self) -> None:
        """The supervisor went away: what it may have left of a late spawn is killed, before
        the loss is handled and anything retried."""
        keys = self._unanswered | self._stopping
        self._unanswered.clear()
        self._stopping.clear()
        if keys:
            await self._kill(keys)

    async def stop(self) -> None:
        """At shutdown, before the connection closes: what a given-up spawn may have started
        is killed, not left behind. Its attempt has ended (not started); were its supervisor
        to die before the next start, nothing would know the program, which would run on
        beside its run's retry (a probe)."""
        self._stopped = True
        await self._tasks.cancel()
        await self.lost()

    def _answered(self, sent: Sent, key: str, future: asyncio.Future[dict[str, Any]]) -> None:
        self._client.forget(sent)
        if future.cancelled() or future.exception() is not None:  # retrieved, whatever comes
            return  # the connection closed: `lost` (or `stop`) has it
        if key not in self._unanswered:
            return  # its end was heard first, or `stop` has it
        self._unanswered.discard(key)
        if future.result().get("ok") and not self._stopped:
            log.warning("late_spawn_stopped", attempt=key, pid=future.result().get("pid"))
            self._stopping.add(key)
            self._tasks.start(self._stop(key))

    async def _stop(self, key: str) -> None:
        with contextlib.suppress(SupervisorUnavailableError):  # gone: `lost` kills it
            await self._client.request({"op": "signal", "key": key, "reason": REASON})

    async def _kill(self, keys: Collection[str]) -> None:
        self._doomed.update(keys)
        if self._scan is None or self._scan.done():
            self._scan = asyncio.create_task(self._kill_doomed(), name="late-spawn-kill")
        await asyncio.shield(self._scan)

    async def _kill_doomed(self) -> None:
        while self._doomed:  # keys added during a scan are killed by the next one
            keys, self._doomed = self._doomed, set()
            await asyncio.to_thread(self._kill_by_keys, keys)
