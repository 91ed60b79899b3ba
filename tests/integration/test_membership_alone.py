"""A server alone (SQLite: nothing fences it, nobody reaps it) whose lease lapsed was only
late, paused or swamped: it takes a new lease and says so as a note, not as an error."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from runyard.services.lease import Lease
from runyard.services.membership import Membership
from runyard.services.wakeup import Wakeup
from runyard.store.sqlite import SQLiteStore
from tests.fakes import FakeClock


def test_a_lone_servers_late_renewal_is_a_note_and_a_new_lease(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SQLiteStore(tmp_path / "store.db")
        await store.open()
        clock = FakeClock()
        lease = Lease()
        member = Membership(
            store, None, lease, clock,  # type: ignore[arg-type]  no attempt of others to reap
            server_id="alone", url="http://127.0.0.1:1", capacity=1, lease_s=1.0,
        )  # fmt: skip
        try:
            first = await member.join()
            clock.advance(30.0)  # paused (SIGSTOP) far past its lease
            with structlog.testing.capture_logs() as logs:
                await member.beat()
            (lapsed,) = [e for e in logs if e["event"] == "lease_lapsed"]
            assert (lapsed["log_level"], lapsed["alone"]) == ("info", True)
            assert member.token is not None and member.token != first
            assert lease.token == member.token
        finally:
            await store.close()

    asyncio.run(scenario())


class Holder:
    """The supervisor's side of a lease (a cluster's server tells it each one it holds)."""

    def __init__(self) -> None:
        self.held: list[float] = []

    async def hold_lease(self, token: str, until: float, grace_s: float, timeout_s: float) -> None:
        self.held.append(until)


def test_a_renewal_that_returns_past_the_lease_wakes_the_dispatcher(tmp_path: Path) -> None:
    """A cluster's server whose renewal took longer than its lease had left: a dispatch in
    between found the lease lapsed and claimed nothing; the renewal must wake it."""

    async def scenario() -> None:
        store = SQLiteStore(tmp_path / "store.db")
        await store.open()
        clock, queue = FakeClock(), Wakeup()
        lease = Lease(renewed=queue)
        member = Membership(
            store, None, lease, clock,  # type: ignore[arg-type]  no attempt of others to reap
            server_id="one", url="http://127.0.0.1:1", capacity=1, lease_s=10.0,
            holder=Holder(),
        )  # fmt: skip
        renew = store.renew_server

        async def slow_renewal(*args: object, **kwargs: object) -> bool:
            granted = await renew(*args, **kwargs)  # type: ignore[arg-type]
            clock.advance(5.0)  # the answer comes back past the lease it renewed
            return granted

        store.renew_server = slow_renewal  # type: ignore[method-assign]
        try:
            await member.join()
            queue.clear()
            clock.advance(7.0)  # a beat, with 3 s of the lease left
            await member.beat()
            assert queue.is_set()  # the lapse between is over: claims may go on
            assert not lease.lapsed(clock.now())
        finally:
            await store.close()

    asyncio.run(scenario())
