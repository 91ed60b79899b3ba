"""A run's files opened as regular files or not at all: what its program may have put in
their place (a FIFO, a directory, a link) is refused at once, never waited on or followed."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from runyard.execution.executor import read_exit_file
from runyard.execution.protocol import UnreadableExit
from runyard.regular_files import NotRegularFileError, open_regular
from runyard.streams.follow import _file_chunks


@pytest.fixture
def places(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "file").write_bytes(b"data")
    os.mkfifo(tmp_path / "fifo")  # opening it for reading would wait for a writer, for ever
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "file")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    return {p.name: p for p in tmp_path.iterdir()}


def test_only_a_regular_file_opens(places: dict[str, Path]) -> None:
    fd, size = open_regular(places["file"])
    assert (os.read(fd, 10), size) == (b"data", 4)
    os.close(fd)
    with pytest.raises(FileNotFoundError):
        open_regular(places["file"].with_name("missing"))
    for name in ("fifo", "dir"):
        with pytest.raises(NotRegularFileError):
            open_regular(places[name])
    for name in ("link", "loop"):
        with pytest.raises(OSError, match="symbolic links"):
            open_regular(places[name])


def test_an_exit_file_or_a_log_that_is_no_file_reads_as_damage_or_nothing(
    places: dict[str, Path],
) -> None:
    for name in ("fifo", "dir", "link", "loop"):
        found = read_exit_file(places[name], "r.1")
        assert isinstance(found, UnreadableExit), name
        assert found.why.startswith("unreadable exit file"), name
        assert read(places[name], 0) == b"", name
    assert read(places["file"], 1) == b"ata"


def read(path: Path, start: int) -> bytes:
    """What a log replay reads of `path` from `start`."""

    async def chunks() -> bytes:
        return b"".join([chunk.data async for chunk in _file_chunks(path, start, None)])

    return asyncio.run(chunks())
