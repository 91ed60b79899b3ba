"""A server alone (SQLite: nothing fences it, nobody reaps it) whose lease lapsed was only
late, paused or swamped: it takes a new lease and says so as a note, not as an error."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from runyard.services.lease import Lease
from runyard.services.membership import Membership
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
