"""A workspace the server copies onto a disk that fills: a copy or nothing, and the error is
the disk's (the run waits in the queue), not a summary that reads as the run's fault."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import stat
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


def test_a_device_fifo_or_socket_in_the_source_fails_the_copy_naming_it(tmp_path: Path) -> None:
    """A probe: `/dev/zero` (a device node) in a `copy:` source was read as a file for ever,
    filling the disk at 350 MB/s past a cancel and a shutdown; a FIFO waited for a writer."""
    jobs = tmp_path / "jobs"
    tree = jobs / "tree"
    tree.mkdir(parents=True)
    (tree / "a.sh").write_text("echo hi\n")
    (tree / "a.sh").chmod(0o751)
    target = tmp_path / "runs" / "r1" / "workspace"
    target.parent.mkdir(parents=True)
    workspace.prepare("copy:tree", jobs, target)  # files are copied with their mode
    assert (target / "a.sh").read_text() == "echo hi\n"
    assert stat.S_IMODE((target / "a.sh").stat().st_mode) == 0o751
    shutil.rmtree(target)

    def sock(path: Path) -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(path))

    makers = {
        "a FIFO": os.mkfifo,
        "a socket": sock,
    }
    if os.geteuid() == 0:  # making a device node takes CAP_MKNOD; /dev/zero's numbers
        makers["a character device"] = lambda p: os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(1, 5))
    for kind, make in makers.items():
        make(tree / "odd")
        with pytest.raises(workspace.WorkspaceError, match=kind) as raised:
            workspace.prepare("copy:tree", jobs, target)
        assert "odd" in str(raised.value)
        assert not target.exists()  # nothing half made
        assert type(preparation_failed(raised.value, "workspace")) is LaunchError
        (tree / "odd").unlink()
    workspace.prepare("copy:tree", jobs, target)
    assert sorted(p.name for p in target.iterdir()) == ["a.sh"]
