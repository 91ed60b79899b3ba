"""A run's files are reached from DATA/runs without following a link anywhere on the way, and
a hard link is never taken for the run's own file, however its program swaps names meanwhile
(probes: a run directory or workspace replaced by a link was read through; a hard link to
/etc/shadow made and dropped in a loop was served as an artifact)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runyard import mounts
from runyard.errors import ConflictError, ForbiddenPathError, NotFoundError
from runyard.regular_files import open_regular
from runyard.services.artifact_listing import list_page
from runyard.services.artifacts import open_artifact
from runyard.services.log_ranges import open_range

SECRET = b"root:$6$not-the-runs:20228:0:99999:7:::\n"


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[Path]:
    """DATA/runs, anchored as the server anchors it at start, and a file outside it."""
    top = tmp_path / "data" / "runs"
    top.mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "shadow").write_bytes(SECRET)
    mounts.record_anchor(top)
    try:
        yield top
    finally:
        mounts.forget_anchor(top)


def _outside_run(runs: Path) -> Path:
    """A directory outside DATA/runs laid out as a run's, the secret in its log and outputs."""
    there = runs.parent.parent / "outside" / "elsewhere"
    (there / "workspace" / "outputs").mkdir(parents=True)
    (there / "attempt-1.log").write_bytes(SECRET)
    (there / "workspace" / "outputs" / "secret.txt").write_bytes(SECRET)
    return there


def test_a_run_directory_replaced_by_a_link_is_not_read_through(runs: Path) -> None:
    run = runs / "r1"
    run.symlink_to(_outside_run(runs))
    with pytest.raises(OSError, match=r"symbolic links|Not a directory"):
        open_regular(run / "attempt-1.log")
    # not its secret, nor an empty log a client takes for a program that printed nothing
    with pytest.raises(ConflictError, match="the attempt's log is not a plain file"):
        open_range(run / "attempt-1.log", 0, 1 << 16)
    page = list_page(run / "workspace", ["outputs/**"], after=None, limit=100, walk_max=1000)
    assert page.artifacts == []
    with pytest.raises(NotFoundError, match="no workspace"):
        open_artifact(run / "workspace", "outputs/secret.txt", ["outputs/**"])


def test_a_workspace_replaced_by_a_link_to_a_directory_lists_nothing(runs: Path) -> None:
    """The listing answered 500 (NotADirectoryError from the walk) for a workspace made a
    link to /etc; a file, a FIFO or a link to nothing in its place were already empty."""
    (runs / "r1").mkdir()
    workspace = runs / "r1" / "workspace"
    workspace.symlink_to(_outside_run(runs) / "workspace")
    page = list_page(workspace, ["**"], after=None, limit=100, walk_max=1000)
    assert (page.artifacts, page.next_cursor) == ([], None)


def test_a_run_file_with_a_second_link_is_read_as_ever(runs: Path) -> None:
    """An operator's `cp -al` snapshot of the data directory gives every file a second link:
    refused for it, a log read as empty and an exit file as unreadable (the attempt lost),
    a review found. The run's directory is not its program's to write under `run_as`."""
    (runs / "r1").mkdir()
    log = runs / "r1" / "attempt-1.log"
    log.write_bytes(b"the run's own\n")
    os.link(log, runs.parent / "snapshot.log")
    fd, size = open_regular(log)
    os.close(fd)
    assert size == len(b"the run's own\n")
    assert open_range(log, 0, 1 << 16).end == size


def test_a_hard_link_dropped_as_the_artifact_opens_is_never_served(runs: Path) -> None:
    """The program's loop of the probe (a file of its own, then the secret linked in its
    place and unlinked again) against downloads as fast as they go: the link count of one
    seen after the unlink passed the check, and the secret was served."""
    workspace = runs / "r1" / "workspace"
    (workspace / "outputs").mkdir(parents=True)
    name = workspace / "outputs" / "h.txt"
    shadow = runs.parent.parent / "outside" / "shadow"
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            name.write_bytes(b"safe\n")
            name.unlink()
            os.link(shadow, name)
            name.unlink()

    swapper = threading.Thread(target=swap)
    swapper.start()
    served = 0
    try:
        for _ in range(4000):
            try:
                opened = open_artifact(workspace, "outputs/h.txt", ["outputs/**"])
            except (ForbiddenPathError, NotFoundError):
                continue
            try:
                assert os.read(opened.fd, 1 << 16) != SECRET
            finally:
                os.close(opened.fd)
            served += 1
    finally:
        stop.set()
        swapper.join()
    assert served > 0  # the program's own file was served meanwhile: the race was run
