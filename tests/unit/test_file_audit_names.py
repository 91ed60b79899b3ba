"""The start-up audit's reads of the runs directory and its close never overlap (a fresh
clone's run: an audit cancelled mid-read closed the scandir iterator from another thread while
a worker thread still read it, and the test process died of a segfault)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from runyard.services import file_audit
from runyard.services.file_audit import RunNames


def test_a_close_waits_for_the_read_under_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "01ABCDEFGHJKMNPQRSTVWXYZ00").mkdir()
    reading, release = threading.Event(), threading.Event()
    real = file_audit._next_names

    def slow(entries, odd):  # type: ignore[no-untyped-def]
        reading.set()
        release.wait(10)
        return real(entries, odd)

    monkeypatch.setattr(file_audit, "_next_names", slow)
    names = RunNames(tmp_path)
    got: list[list[str]] = []
    reader = threading.Thread(target=lambda: got.append(names.next_chunk()))
    reader.start()
    assert reading.wait(10)
    closer = threading.Thread(target=names.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # held off while the read goes on
    release.set()
    reader.join(10)
    closer.join(10)
    assert not closer.is_alive()
    assert got == [["01ABCDEFGHJKMNPQRSTVWXYZ00"]]
    assert names.next_chunk() == []  # closed: nothing more is read


def test_a_missing_runs_directory_reads_as_empty(tmp_path: Path) -> None:
    names = RunNames(tmp_path / "absent")
    assert names.next_chunk() == []
    names.close()
