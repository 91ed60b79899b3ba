"""Deployments in different schemas of one PostgreSQL database share nothing: NOTIFY channels
and advisory locks belong to the whole database, so runyard scopes both to its schema."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest

from runyard.store.logic import QUEUE_CHANNEL
from runyard.store.postgres import PostgresStore
from tests.integration.conftest import POSTGRES
from tests.integration.test_store_contract import make_run

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _store(schema: str, how: str) -> PostgresStore:
    if how == "given":
        return PostgresStore(POSTGRES, schema=schema)
    return PostgresStore(f"{POSTGRES} options='-c search_path={schema}'")  # as an operator would


@pytest.fixture(params=["given", "search_path"])
async def two_deployments(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    schemas = [f"t_{uuid.uuid4().hex[:16]}" for _ in range(2)]
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f"CREATE SCHEMA {schema}")
    stores = [_store(schema, request.param) for schema in schemas]
    for store in stores:
        await store.open()
    yield stores[0], stores[1]
    for store in stores:
        await store.close()
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


async def test_a_deployment_hears_only_its_own_schema(
    two_deployments: tuple[PostgresStore, PostgresStore],
) -> None:
    mine, other = two_deployments
    heard: asyncio.Queue[str] = asyncio.Queue()
    await mine.listen({QUEUE_CHANNEL: heard.put_nowait})
    assert await asyncio.wait_for(heard.get(), 10) == ""  # connected: told to look once
    for _ in range(3):
        await other.insert_run(make_run())  # the other deployment's submissions
    await mine.insert_run(make_run())
    # a marker after them all: notifications arrive in commit order, so whatever of the
    # above reaches this listener has arrived once the marker has
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        channel = mine._scope(QUEUE_CHANNEL)
        conn.execute("SELECT pg_notify(%s, 'marker')", (channel,))
    got = []
    while (item := await asyncio.wait_for(heard.get(), 10)) != "marker":
        got.append(item)
    assert got == [""]  # our one submission, nothing of the other schema's three


async def test_each_deployment_has_its_own_scheduler_leader(
    two_deployments: tuple[PostgresStore, PostgresStore],
) -> None:
    mine, other = two_deployments
    assert await mine.try_lead()
    assert await other.try_lead()  # not held off by a leader of another deployment
