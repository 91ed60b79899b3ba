"""A progress file or log that its program cuts back or rewrites (`>` rather than `>>`, a
rename over it, a truncate) is read again from its start: the run's progress follows the
program, where it froze at the first line as long as the new one (an attacker's probe)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from runyard.execution.layout import RunPaths
from runyard.models import Run
from runyard.store.sqlite import SQLiteStore
from runyard.streams.cursor import FileCursor, read_on
from runyard.streams.subscriber import Chunk, Lagged
from runyard.streams.tailer import AttemptTailer
from tests.support import queued_run

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[SQLiteStore, Run, RunPaths]]:
    store = SQLiteStore(tmp_path / "store.db")
    await store.open()
    await store.insert_run(queued_run())
    (claim,) = await store.claim(1, {}, now=2000.0, host="h")
    paths = RunPaths.of(tmp_path, claim.run.id)
    paths.root.mkdir(parents=True)
    try:
        yield store, claim.run, paths
    finally:
        await store.close()


def overwrite(path: Path, data: bytes) -> None:
    """What the shell's `>` does: the file cut to nothing, then written from its start."""
    path.write_bytes(data)


def tailer_of(store: SQLiteStore, run: Run, paths: RunPaths, seen: list[Any]) -> AttemptTailer:
    async def on_progress(_: str, progress: dict[str, Any] | None) -> None:
        seen.append(progress)

    return AttemptTailer(run.id, 1, paths, store, on_progress)


async def test_a_progress_file_rewritten_with_lines_as_long_is_followed(running) -> None:
    store, run, paths = running
    seen: list[Any] = []
    tailer = tailer_of(store, run, paths, seen)
    progress = paths.progress_file(1)
    for step in (1, 2, 3):  # each line the same length as the one it replaces
        overwrite(progress, b'{"fraction": 0.%d}\n' % step)
        await tailer.pump_progress()
    assert seen == [{"fraction": 0.1}, {"fraction": 0.2}, {"fraction": 0.3}]
    overwrite(progress, b'{"f": 1}\n')  # shorter: the file is cut back under what was read
    await tailer.pump_progress()
    os.rename(
        _written(paths.root / "next", b'{"fraction": 0.99, "message": "renamed"}\n'), progress
    )
    await tailer.pump_progress()
    assert seen[3:] == [{"f": 1}, {"fraction": 0.99, "message": "renamed"}]
    stored = await store.get_run(run.id)
    assert stored is not None and stored.progress == {"fraction": 0.99, "message": "renamed"}
    # appended to as meant: each line read once, nothing read again
    with progress.open("ab") as appending:
        appending.write(b'{"fraction": 1.0}\n')
    await tailer.pump_progress()
    await tailer.pump_progress()
    assert seen[5:] == [{"fraction": 1.0}]


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


async def test_a_log_cut_back_tells_its_watchers_to_read_it_again_from_the_start(
    running,
) -> None:
    store, run, paths = running
    tailer = tailer_of(store, run, paths, [])
    log = paths.log(1)
    log.write_bytes(b"first line, long enough\n")
    watcher, start = tailer.subscribe()
    assert start == 0
    await tailer.pump()
    assert await watcher.drain() == [Chunk(0, b"first line, long enough\n")]

    overwrite(log, b"second\n")  # shorter than what was published
    await tailer.pump()
    assert await watcher.drain() == [Lagged(0)]  # resume from 0: what is there now
    assert watcher not in tailer.subscribers
    again, start = tailer.subscribe()
    assert start == len(b"second\n")  # the new file was published from its start
    with log.open("ab") as appending:
        appending.write(b"third\n")
    await tailer.pump()
    assert await again.drain() == [Chunk(7, b"third\n")]


def test_a_cursor_reads_on_where_the_file_is_what_it_saw_and_from_the_start_elsewhere(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f"
    cursor = FileCursor()
    assert read_on(path, cursor, 100).data == b""  # not there yet
    path.write_bytes(b"a" * 100)
    got = read_on(path, cursor, 100)
    assert (got.data, got.restarted) == (b"a" * 100, False)
    cursor.advance(got.data)
    assert read_on(path, cursor, 100).data == b""
    path.write_bytes(b"a" * 99 + b"b")  # as long, another last byte
    got = read_on(path, cursor, 100)
    assert (got.data, got.restarted) == (b"a" * 99 + b"b", True)
    # resumed from an offset alone (after a restart): only a shorter file can be told
    resumed = FileCursor(offset=100)
    assert read_on(path, resumed, 100).data == b""
    path.write_bytes(b"a" * 100 + b"more")
    assert read_on(path, resumed, 100).data == b"more"


async def test_a_read_cancelled_under_way_is_neither_lost_nor_read_twice(running) -> None:
    """The tailer finished (or stopped) while a pump's read was under way in its thread: the
    read cannot be stopped, and the pump that followed read beside it, the two moving one
    progress cursor and parser. Each line is parsed once, and the last is the run's."""
    store, run, paths = running
    seen: list[Any] = []
    tailer = tailer_of(store, run, paths, seen)
    lines = b"".join(b'{"fraction": %.6f}\n' % (i / 30_000) for i in range(30_001))
    paths.progress_file(1).write_bytes(lines)  # within a read: parsed in one go, for a while
    pumping = asyncio.create_task(tailer.pump())
    await asyncio.sleep(0)  # its read is under way in a worker thread
    pumping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pumping
    await tailer.pump_progress(final=True)
    assert tailer.parser.consumed == len(lines)
    assert seen[-1]["fraction"] == 1.0
    # every line is an event stored or one counted as coalesced: none dropped with the read
    stored = [e for e in await store.list_events(run.id, 0, 10_000) if e.kind == "progress"]
    assert len(stored) + tailer.parser.coalesced == 30_001


async def test_the_last_lines_written_as_the_tailer_finishes_are_the_runs(running) -> None:
    """A flake of the dashboard's test, explained: the program wrote its last progress, the
    pump read it and was writing it when the run ended and the tailer finished, cancelling
    the pump. The write, abandoned before the store ran it, took the lines with it (the cursor
    past them): the run ended at 60 %. The write ends first; the run ends at its last line."""
    store, run, paths = running
    seen: list[Any] = []
    tailer = tailer_of(store, run, paths, seen)
    held, release = asyncio.Event(), asyncio.Event()
    real = store.add_progress

    async def slow_write(*args: Any, **kwargs: Any) -> None:
        held.set()
        await release.wait()  # under way when the pump is cancelled
        await real(*args, **kwargs)

    store.add_progress = slow_write  # type: ignore[method-assign]
    paths.progress_file(1).write_bytes(b'{"fraction": 0.5}\n{"fraction": 1.0}\n')
    tailer._written_at = 0.0  # a write is due at once
    pumping = asyncio.create_task(tailer.pump())
    await held.wait()
    pumping.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await pumping
    store.add_progress = real  # type: ignore[method-assign]
    await tailer.pump_progress(final=True)
    stored = await store.get_run(run.id)
    assert stored is not None and stored.progress == {"fraction": 1.0}
