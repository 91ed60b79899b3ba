"""No walk of a run's tree crosses a mount point its program left (a probe: a bind mount of a
host directory in outputs/ was listed, served, and emptied by the run's delete). Bind mounts
of the same file system keep st_dev: only the mount ID tells them, so most cases here are
those; one mounts a directory of another file system."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from runyard import mounts, tree_removal
from runyard.errors import ForbiddenPathError
from runyard.regular_files import open_regular
from runyard.services import removal as removal_module
from runyard.services.artifact_listing import list_page, workspace_usage
from runyard.services.artifacts import open_artifact
from runyard.services.removal import FilesRemainError, Removal
from tests.mounting import (
    OTHER_FILE_SYSTEM,
    bind,
    detach_all,
    mounts_under,
    mounts_undone,
    victim_intact,
    victim_tree,
)

ALL = ["**"]


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    """DATA/runs/R1 with its workspace, outputs/ok.txt in it; the victim beside the data."""
    with mounts_undone(tmp_path):
        outputs = tmp_path / "runs" / "R1" / "workspace" / "outputs"
        outputs.mkdir(parents=True)
        (outputs / "ok.txt").write_text("ours\n")
        victim_tree(tmp_path / "victim")
        yield tmp_path / "runs" / "R1"


def _victim(run_dir: Path) -> Path:
    return run_dir.parent.parent / "victim"


def _mounted(run_dir: Path, at: str = "workspace/outputs/m") -> Path:
    """The victim bind-mounted at `at`, over a directory holding a file of the run's own."""
    point = run_dir / at
    point.mkdir(parents=True, exist_ok=True)
    (point / "under.txt").write_text("the run's own, under the mount\n")
    bind(_victim(run_dir), point)
    return point


def _page(workspace: Path) -> tuple[list[str], list[tuple[str, str]]]:
    page = list_page(workspace, ALL, after=None, limit=100, walk_max=1000)
    return [a.path for a in page.artifacts], [(s.path, s.reason) for s in page.skipped]


def test_a_bind_mount_is_not_listed_but_named_as_a_mount_point(run_dir: Path) -> None:
    _mounted(run_dir)
    listed, skipped = _page(run_dir / "workspace")
    assert listed == ["outputs/ok.txt"]
    assert [(path, reason.split(":")[0]) for path, reason in skipped] == [
        ("outputs/m", "a mount point")
    ]
    # the next page, resumed at the mount point, names it no more
    page = list_page(run_dir / "workspace", ALL, after=("outputs", "m"), limit=1, walk_max=10)
    assert page.skipped == []


def test_the_workspace_size_leaves_out_what_is_mounted(run_dir: Path) -> None:
    (_victim(run_dir) / "big.bin").write_bytes(b"x" * (1 << 20))
    before, _ = workspace_usage(run_dir / "workspace", 1000)
    _mounted(run_dir)
    after, _ = workspace_usage(run_dir / "workspace", 1000)
    assert after - before < 1 << 19  # the run's own small directory, not the victim's MiB


def test_a_file_bind_mounted_into_outputs_is_not_listed_or_served(run_dir: Path) -> None:
    """A regular file with one link, mounted over a file of the run's: only its mount ID
    differs from the workspace's."""
    target = run_dir / "workspace" / "outputs" / "shadow.txt"
    target.write_text("the run's own\n")
    bind(_victim(run_dir) / "keep.txt", target)
    listed, skipped = _page(run_dir / "workspace")
    assert listed == ["outputs/ok.txt"]
    assert [path for path, _ in skipped] == ["outputs/shadow.txt"]
    with pytest.raises(ForbiddenPathError, match="mount point"):
        open_artifact(run_dir / "workspace", "outputs/shadow.txt", ALL)


def test_no_file_under_a_mount_point_is_served(run_dir: Path) -> None:
    _mounted(run_dir)
    for path in ["outputs/m/keep.txt", "outputs/m/sub/deep.txt"]:
        with pytest.raises(ForbiddenPathError, match="mount point"):
            open_artifact(run_dir / "workspace", path, ALL)
    os.close(open_artifact(run_dir / "workspace", "outputs/ok.txt", ALL).fd)


def test_a_workspace_that_is_itself_a_mount_point_is_refused(run_dir: Path) -> None:
    """Mounted over the workspace, the victim's files are at the workspace's top: the root
    is compared with its parent."""
    _mounted(run_dir, at="workspace")
    with pytest.raises(ForbiddenPathError, match="mount point"):
        list_page(run_dir / "workspace", ALL, after=None, limit=100, walk_max=1000)
    with pytest.raises(ForbiddenPathError, match="mount point"):
        open_artifact(run_dir / "workspace", "keep.txt", ALL)
    assert workspace_usage(run_dir / "workspace", 1000) == (0, False)


def test_a_removal_that_may_not_detach_leaves_the_mount_and_the_victim(run_dir: Path) -> None:
    point = _mounted(run_dir)
    with pytest.raises(OSError, match="outputs/m"):
        tree_removal.remove_tree(run_dir)
    assert victim_intact(_victim(run_dir))
    assert mounts_under(point) == [str(point.resolve())]
    # the rest of the run's own is removed: only the way to the mount is left
    left = {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if point not in p.parents}
    assert left == {"workspace", "workspace/outputs", "workspace/outputs/m"}


def test_a_removal_detaches_mounts_and_removes_what_they_covered(run_dir: Path) -> None:
    point = _mounted(run_dir)
    _mounted(run_dir, at="workspace/deeper/still")
    bind(_victim(run_dir) / "keep.txt", run_dir / "workspace" / "outputs" / "ok.txt")
    detached = tree_removal.remove_tree(run_dir, detach_mounts=True)
    assert sorted(detached) == [
        "workspace/deeper/still", "workspace/outputs/m", "workspace/outputs/ok.txt"
    ]  # fmt: skip
    assert not run_dir.exists()
    assert victim_intact(_victim(run_dir))
    assert mounts_under(point.parent.parent) == []


def test_a_bind_mount_of_another_file_system_is_not_crossed(run_dir: Path) -> None:
    if not OTHER_FILE_SYSTEM.is_dir() or OTHER_FILE_SYSTEM.stat().st_dev == run_dir.stat().st_dev:
        pytest.skip(f"{OTHER_FILE_SYSTEM} is not another file system here")
    elsewhere = OTHER_FILE_SYSTEM / f"runyard-test-victim-{run_dir.parent.name}"
    try:
        victim_tree(elsewhere)
        point = run_dir / "workspace" / "outputs" / "m"
        point.mkdir()
        bind(elsewhere, point)
        listed, skipped = _page(run_dir / "workspace")
        assert listed == ["outputs/ok.txt"]
        assert [path for path, _ in skipped] == ["outputs/m"]
        with pytest.raises(ForbiddenPathError, match="mount point"):
            open_artifact(run_dir / "workspace", "outputs/m/keep.txt", ALL)
        with pytest.raises(OSError, match="outputs/m"):
            tree_removal.remove_tree(run_dir)
        assert victim_intact(elsewhere)
    finally:
        detach_all(run_dir)
        shutil.rmtree(elsewhere, ignore_errors=True)


class _Paths:
    def __init__(self, root: Path) -> None:
        self.root = root


class _Executor:
    def __init__(self, runs: Path) -> None:
        self.runs = runs

    def paths(self, run_id: str) -> _Paths:
        return _Paths(self.runs / run_id)


class _Store:
    async def delete_run(self, run_id: str) -> bool:
        return True


def test_a_delete_detaches_mounts_in_the_run_and_over_it(run_dir: Path) -> None:
    """One under the run's directory is carried into the trash and detached there; one over
    the run's directory itself made its rename fail (EBUSY) at every try."""
    _mounted(run_dir)
    (run_dir / "own.log").write_text("the run's log\n")
    bind(_victim(run_dir), run_dir)
    removal = Removal(_Store(), _Executor(run_dir.parent))  # type: ignore[arg-type]
    assert asyncio.run(removal.delete("R1")) is True
    assert not run_dir.exists()
    assert victim_intact(_victim(run_dir))
    assert list((run_dir.parent / ".deleting").iterdir()) == []
    assert mounts_under(run_dir.parent) == []


def test_a_file_mounted_over_a_runs_own_file_is_not_opened(run_dir: Path) -> None:
    """Its log, progress and exit files are opened by name: one mounted over is refused as a
    FIFO there is, as something its program made of it."""
    log = run_dir / "attempt-1.log"
    log.write_text("the run's log\n")
    bind(_victim(run_dir) / "keep.txt", log)
    with pytest.raises(OSError, match="mount point"):
        open_regular(log)
    os.close(open_regular(log, follow_links=True)[0])  # a job file may be mounted in place


def _refused(*_args: object) -> OSError:
    return OSError(errno.EPERM, "Operation not permitted")


def test_a_delete_that_may_not_detach_succeeds_and_leaves_the_mount_in_the_trash(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that is not root: the record goes, the run's own files go, the mount stays
    where nothing names it, said in the log, until an operator unmounts it."""
    _mounted(run_dir)
    monkeypatch.setattr(tree_removal, "detach", _refused)
    removal = Removal(_Store(), _Executor(run_dir.parent))  # type: ignore[arg-type]
    with capture_logs() as logs:
        assert asyncio.run(removal.delete("R1")) is True
    assert not run_dir.exists()
    assert victim_intact(_victim(run_dir))
    left = [e for e in logs if e["event"] == "run_files_left_in_trash"]
    assert len(left) == 1 and "workspace/outputs/m (not detached" in left[0]["error"]
    trash = run_dir.parent / ".deleting" / "R1"
    assert not (trash / "workspace" / "outputs" / "ok.txt").exists()
    assert mounts_under(trash) == [str((trash / "workspace" / "outputs" / "m").resolve())]


def test_a_mount_over_the_run_that_may_not_be_detached_refuses_the_delete(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bind(_victim(run_dir), run_dir)
    monkeypatch.setattr(removal_module, "detach_path", _refused)
    removal = Removal(_Store(), _Executor(run_dir.parent))  # type: ignore[arg-type]
    with pytest.raises(FilesRemainError, match=r"is a mount point .* unmount it"):
        asyncio.run(removal.delete("R1"))
    assert victim_intact(_victim(run_dir))
    assert mounts_under(run_dir) == [str(run_dir.resolve())]


def test_on_a_kernel_without_statx_mount_ids_fdinfo_tells_a_bind_mount(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before Linux 5.8 statx has no mount ID: /proc/self/fdinfo's is read instead."""
    monkeypatch.setattr("runyard.mounts._Kernel.statx_says", False)
    _mounted(run_dir)
    listed, skipped = _page(run_dir / "workspace")
    assert listed == ["outputs/ok.txt"]
    assert [path for path, _ in skipped] == ["outputs/m"]
    with pytest.raises(ForbiddenPathError, match="mount point"):
        open_artifact(run_dir / "workspace", "outputs/m/keep.txt", ALL)


@pytest.fixture
def anchored(run_dir: Path) -> Iterator[Path]:
    """DATA/runs's mount recorded, as a server records it at start; forgotten after."""
    runs = run_dir.parent
    mounts.record_anchor(runs)
    try:
        yield runs
    finally:
        mounts.forget_anchor(runs)


def test_a_mount_over_the_runs_directory_serves_nothing_of_the_victim(
    run_dir: Path, anchored: Path
) -> None:
    """Mounted over DATA/runs/R1 (from its workspace, by a program running as root): its
    workspace and files are the victim's, each on its parent's mount. The anchor tells."""
    victim = _victim(run_dir)
    (victim / "attempt-1.log").write_text("victim-log\n")
    (victim / "workspace").mkdir()
    (victim / "workspace" / "keep.txt").write_text("victim-artifact\n")
    bind(victim, run_dir)
    with pytest.raises(OSError, match="mount point"):
        open_regular(run_dir / "attempt-1.log")
    with pytest.raises(ForbiddenPathError, match="mount point"):
        open_artifact(run_dir / "workspace", "keep.txt", ALL)
    with pytest.raises(ForbiddenPathError, match="mount point"):
        list_page(run_dir / "workspace", ALL, after=None, limit=100, walk_max=1000)


def test_a_mount_over_the_runs_parent_serves_and_deletes_nothing(
    run_dir: Path, anchored: Path
) -> None:
    """Mounted over DATA/runs itself: every run's files are the victim's; nothing under it is
    served, and a delete is refused, naming it, without a rename in the victim."""
    victim = _victim(run_dir)
    (victim / "R1" / "workspace").mkdir(parents=True)
    (victim / "R1" / "workspace" / "keep.txt").write_text("victim-artifact\n")
    bind(victim, anchored)
    with pytest.raises(ForbiddenPathError, match="mount point"):
        open_artifact(run_dir / "workspace", "keep.txt", ALL)
    removal = Removal(_Store(), _Executor(anchored))  # type: ignore[arg-type]
    with pytest.raises(FilesRemainError, match="a mount point covers the runs' directory"):
        asyncio.run(removal.delete("R1"))
    assert asyncio.run(removal.empty_trash()) == 0
    assert victim_intact(victim)
    assert sorted(p.name for p in victim.iterdir()) == ["R1", "keep.txt", "sub"]


def test_a_mount_over_the_trash_that_may_not_be_detached_refuses_deletes_and_the_pass(
    run_dir: Path, anchored: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trash = anchored / ".deleting"
    trash.mkdir()
    victim = _victim(run_dir)
    bind(victim, trash)
    monkeypatch.setattr(removal_module, "detach_path", _refused)
    removal = Removal(_Store(), _Executor(anchored))  # type: ignore[arg-type]
    with capture_logs() as logs:
        with pytest.raises(FilesRemainError, match=r"a mount point covers the trash .*umount"):
            asyncio.run(removal.delete("R1"))
        assert asyncio.run(removal.empty_trash()) == 0
        assert asyncio.run(removal.empty_trash()) == 0
    assert [e["path"] for e in logs if e["event"] == "trash_is_a_mount_point"] == [str(trash)]
    assert victim_intact(victim)
    assert (run_dir / "workspace" / "outputs" / "ok.txt").exists()  # nothing was changed
