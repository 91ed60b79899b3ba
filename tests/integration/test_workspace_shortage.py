"""A workspace the server copies onto a disk that fills: a copy or nothing, and the error is
the disk's (the run waits in the queue), not a summary that reads as the run's fault."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import pytest

from runyard.execution import workspace
from runyard.execution.base import LaunchError, ShortageError, preparation_failed
from tests.support import small_tmpfs


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "small", "4m") as mnt:
        yield mnt


def test_a_copy_the_disk_cannot_hold_leaves_nothing_and_is_a_shortage(
    tmp_path: Path, small_disk: Path
) -> None:
    jobs = tmp_path / "jobs"
    (jobs / "tree" / "deep").mkdir(parents=True)
    (jobs / "tree" / "small.txt").write_text("x")
    (jobs / "tree" / "deep" / "big.bin").write_bytes(b"\0" * (6 << 20))  # more than the disk
    target = small_disk / "runs" / "r1" / "workspace"
    target.parent.mkdir(parents=True)
    with pytest.raises(OSError) as raised:
        workspace.prepare("copy:tree", jobs, target)
    assert raised.value.errno == errno.ENOSPC
    assert not target.exists()  # a later attempt never runs in half a copy
    assert isinstance(preparation_failed(raised.value, "workspace"), ShortageError)
    (jobs / "tree" / "deep" / "big.bin").write_bytes(b"\0" * 1024)  # room now: it copies
    workspace.prepare("copy:tree", jobs, target)
    assert (target / "deep" / "big.bin").stat().st_size == 1024


def test_a_copy_refused_for_another_reason_is_the_runs_failure(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    (jobs / "tree").mkdir(parents=True)
    (jobs / "tree" / "a.txt").write_text("x")
    target = tmp_path / "runs" / "r1" / "workspace"
    target.parent.mkdir(parents=True)
    target.write_text("a file where the copy goes")  # no wait makes room for it
    with pytest.raises(OSError) as raised:
        workspace.prepare("copy:tree", jobs, target)
    assert type(preparation_failed(raised.value, "workspace")) is LaunchError
