"""A registration reads its server row locked (a review): a renewal of the life it replaces,
which takes no advisory lock, committed between the read and the write moved the lease's end
after it was read, and the new life recorded the earlier end as the replaced one; its recovery
and every reaper then settled that life's attempts before its supervisor's fence."""

from __future__ import annotations

import time

import psycopg
import pytest

from runyard.store import postgres_sql as q
from runyard.store.postgres import PostgresStore

pytestmark = pytest.mark.anyio


async def test_a_renewal_waits_for_the_registration_reading_its_row(
    database: str, tmp_path
) -> None:
    store = PostgresStore(database)
    await store.open()
    try:
        token, _ = await store.register_server("a", "http://a", 1, time.time(), 60)
    finally:
        await store.close()
    with psycopg.connect(database) as registering, psycopg.connect(database) as renewing:
        registering.execute(q.GET_SERVER_FOR_UPDATE.replace("%s", "'a'"))  # its transaction open
        renewing.execute("SET lock_timeout = '300ms'")
        now = time.time()
        with pytest.raises(psycopg.errors.LockNotAvailable):
            renewing.execute(q.RENEW_SERVER, (now, now + 60, "a", token, now))


def test_a_registration_reads_its_row_locked() -> None:
    from runyard.store.leases import register_server

    unit = register_server("a", "http://a", 1, 0.0, 10)
    assert next(unit).name == "LOCK_SERVER_ID"
    assert unit.send(None).name == "GET_SERVER_FOR_UPDATE"
