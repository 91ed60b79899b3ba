"""Membership: this server's lease in the cluster, renewed while it lives; and the reaping of
attempts whose server's lease expired (a lost host), so they are retried elsewhere.

With SQLite there is one server and nothing to reap, but the same code runs: a lone server
that restarts takes back its own attempts (see `Store.register_server`).

Self-fencing (cluster only): after every registration and renewal the supervisor is told how
long the lease now lasts (`on_lease`); should it lapse unrenewed, the supervisor stops this
server's programs itself (execution/lease_watch.py). Reapers here therefore wait a lease's
expiry plus `reap_margin_s`, longer than the fence's kill grace (half the margin), so the
fence always acts first and no run has two live attempts.

Every registration is a new life with a token of its own, which takes over every attempt of
the id. The same wait holds for a new life: what the life it replaced ran, and its own
supervisor does not run, may run on where that life ran (another host; a paused or copied
process) until that lease's end plus the margin (`Lease.inherited_until`, which recovery
waits for). The replaced process, if it lives, fails its next renewal and stands by.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from runyard.background import Periodic
from runyard.clock import Clock
from runyard.errors import ServerIdTakenError
from runyard.services.attempts import Attempts
from runyard.services.lease import Lease
from runyard.store import Store

log = structlog.get_logger(__name__)


class LeaseHolder(Protocol):
    """Who must hear of every lease this server holds (the executor's supervisor)."""

    async def hold_lease(
        self, token: str, until: float, grace_s: float, timeout_s: float
    ) -> None: ...


class Membership:
    def __init__(
        self,
        store: Store,
        attempts: Attempts,
        lease: Lease,
        clock: Clock,
        *,
        server_id: str,
        url: str,
        capacity: int,
        lease_s: float,
        reap_margin_s: float = 0.0,
        holder: LeaseHolder | None = None,
        rejoined: Callable[[], Awaitable[object]] | None = None,
        instance: str | None = None,
    ) -> None:
        self.store = store
        self.instance = instance  # this process's host and data directory (runtime.py)
        self.attempts = attempts  # reaps other servers' attempts
        self.lease = lease
        self.clock = clock
        self.server_id = server_id
        self.url = url
        self.capacity = capacity
        self.lease_s = lease_s
        self.reap_margin_s = reap_margin_s
        self.holder = holder  # None with one server (SQLite): nothing is fenced
        self.token: str | None = None
        self.taken_over = False  # another process registered this id since: we stand by
        self.reaped = 0
        # called after a lapsed lease was replaced by a new one (reconcile what we run)
        self.rejoined = rejoined
        # A lease is a promise to speak again within lease_s: a heartbeat, the one place where
        # waiting on the clock is the point (joining was the first beat)
        self._task = Periodic(
            "membership", lease_s / 3, self.beat, wait_first=True, failed="heartbeat_failed"
        )

    async def join(self) -> str:
        """Register a new life of this server id. A process that held the id before (its
        token) is refused (ServerIdTakenError) while another took it over and lives."""
        now = self.clock.now()
        self.token, replaced = await self.store.register_server(
            self.server_id, self.url, self.capacity, now, self.lease_s, self.instance,
            holding=self.token,
        )  # fmt: skip
        self.taken_over = False
        if self.holder is not None and replaced is not None:
            # what the replaced life ran elsewhere is fenced by its own supervisor by then
            until = replaced + self.reap_margin_s
            self.lease.inherited_until = max(until, self.lease.inherited_until or until)
        await self._held(now)
        log.info("joined", server_id=self.server_id, url=self.url, lease_s=self.lease_s)
        return self.token

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def beat(self) -> None:
        if self.token is None:  # could not join at start (its store refused the write)
            await self.join()
            if self.rejoined is not None:
                await self.rejoined()
            return
        now = self.clock.now()
        if not self.taken_over and await self.store.renew_server(
            self.server_id, self.token, now, self.lease_s
        ):
            await self._held(now)
        else:
            if not self.taken_over:
                # alone (no holder: SQLite) nothing was fenced or reaped meanwhile: this
                # server was only late (paused, swamped), which is worth a note, not an alarm
                report = log.error if self.holder is not None else log.info
                report("lease_lapsed", server_id=self.server_id, alone=self.holder is None)
            try:
                await self.join()
            except ServerIdTakenError as exc:
                self._taken_over(now, exc)
                return
            if self.rejoined is not None:
                await self.rejoined()
        await self.reap()

    def _taken_over(self, now: float, exc: ServerIdTakenError) -> None:
        """Another process holds this id now: claim nothing from this moment (its lease is
        no longer ours to renew, and what we claimed under it the other one would not know
        of). Our supervisor stops our programs when the last lease it was told of ends, as
        the new holder expects; we rejoin once that holder's lease lapses."""
        if self.token is not None:
            self.lease.hold(self.token, now, now)
        if not self.taken_over:
            log.error("server_id_taken_over", server_id=self.server_id, reason=str(exc))
        self.taken_over = True

    async def _held(self, renewed_at: float) -> None:
        """The lease is what the store now says (renewed_at + lease_s): hold it, and tell the
        supervisor. Only in a cluster (a holder to tell) does the lease end claims."""
        if self.token is None:
            return
        clustered = self.holder is not None
        # Lapsed or not is asked of the clock now, not of the renewal's start: a renewal
        # slower than what was left of the lease returns past its end, and a dispatch in
        # between found it lapsed and claimed nothing; only a hold that says so wakes it.
        until = renewed_at + self.lease_s if clustered else None
        self.lease.hold(self.token, self.clock.now(), until)
        if self.holder is not None:
            await self.holder.hold_lease(
                self.token, renewed_at + self.lease_s, self.reap_margin_s / 2, self.lease_s / 6
            )

    async def reap(self) -> int:
        """Declare lost what servers whose lease expired (more than the margin ago) were
        running; returns how many. The margin gives their supervisors the time to fence."""
        found = 0
        expired_before = self.clock.now() - self.reap_margin_s
        for attempt in await self.store.orphaned_attempts(expired_before):
            run = await self.store.get_run(attempt.run_id)
            if run is None or run.attempt != attempt.number:
                continue
            why = f"its server {attempt.host} stopped renewing its lease"
            await self.attempts.reap(run, attempt.number, attempt.lease_token, why)
            log.warning("attempt_reaped", run_id=run.id, attempt=attempt.number,
                        server=attempt.host)  # fmt: skip
            found += 1
        self.reaped += found
        return found
