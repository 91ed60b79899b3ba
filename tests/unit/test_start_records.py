"""Start records (services/start_records.py): the starts heard in one turn of the event loop
leave in one store write after it; one whose end is heard in the same turn is not written."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from runyard.services.start_records import StartRecord, StartRecords
from runyard.store import Store


class Recorded:
    """The one store method start records use, recording each write it is asked for."""

    def __init__(self) -> None:
        self.writes: list[list[StartRecord]] = []

    async def attempts_started(self, started: list[StartRecord]) -> None:
        self.writes.append(started)


def records() -> tuple[StartRecords, Recorded]:
    store = Recorded()
    return StartRecords(cast(Store, cast(Any, store))), store


def test_the_starts_of_one_turn_leave_in_one_write() -> None:
    asyncio.run(_the_starts_of_one_turn_leave_in_one_write())


async def _the_starts_of_one_turn_leave_in_one_write() -> None:
    starts, store = records()
    starts.hold("a.1", ("a", 1, 10, 10, 1.0, 2.0))
    starts.hold("b.1", ("b", 1, 11, 11, 1.0, 2.0))
    assert store.writes == []  # nothing before the turn ends
    await starts.written()
    assert store.writes == [[("a", 1, 10, 10, 1.0, 2.0), ("b", 1, 11, 11, 1.0, 2.0)]]


def test_a_start_whose_end_is_heard_in_its_turn_is_not_written() -> None:
    asyncio.run(_a_start_whose_end_is_heard_in_its_turn_is_not_written())


async def _a_start_whose_end_is_heard_in_its_turn_is_not_written() -> None:
    starts, store = records()
    starts.hold("a.1", ("a", 1, 10, 10, 1.0, 2.0))
    starts.hold("b.1", ("b", 1, 11, 11, 1.0, 2.0))
    starts.ended("a.1")
    await starts.written()
    assert store.writes == [[("b", 1, 11, 11, 1.0, 2.0)]]


def test_a_start_is_not_put_off_past_its_turn() -> None:
    asyncio.run(_a_start_is_not_put_off_past_its_turn())


async def _a_start_is_not_put_off_past_its_turn() -> None:
    """Nobody asking for it: it leaves at the end of the turn all the same (a server killed
    later has it written; recovery checks a forged exit file against it)."""
    starts, store = records()
    starts.hold("a.1", ("a", 1, 10, 10, 1.0, 2.0))
    for _ in range(3):  # the flush's turn, the write's task, its await
        await asyncio.sleep(0)
    assert store.writes == [[("a", 1, 10, 10, 1.0, 2.0)]]
