"""Deleting a finished run: its record and its files, all or nothing as anyone can see.

The files are set aside first, in one rename into the runs directory's trash; then the
record is deleted; then what was set aside is removed. A record that cannot be deleted (a
full disk, an I/O error) gets its files back under their names: the refused delete changed
nothing. Files that cannot be removed once their record is gone stay in the trash, where
nothing can name them, and the next retention pass (one at start, then each interval)
removes them.

No removal crosses a mount point (tree_removal.py): one the run's program left in its files (a
bind mount of a host directory, /dev, /proc) is detached once the record is gone (so a
refused delete keeps it too), which takes a server running as root, and what it covered,
the run's own, removed; the mounted files are untouched. One the server may not detach is
left in the trash as it is, named in a warning (`run_files_left_in_trash`, then
`trash_not_emptied` at each pass) until an operator unmounts it: the delete succeeds all the
same, for all that was the run's own. A mount over the run's directory itself (which no
rename can move) is detached before it is set aside; if it cannot be, the delete is refused
with a problem that says to unmount it.

Nothing is set aside or removed unless the runs' directory and its trash are on the mount
the runs' directory was on at start (mounts.py): a mount over DATA/runs refuses every delete
and the trash pass; one over the trash is detached when the server may, else the same,
with a problem naming it (`trash_is_a_mount_point`, warned of once).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from pathlib import Path

import structlog

from runyard import failpoints
from runyard.errors import FULL_ERRNOS, StorageFullError, UnavailableError
from runyard.execution.base import Executor
from runyard.mounts import Place, anchor_of, covered, detach_path, place_of, warn_once
from runyard.store import Store
from runyard.tree_removal import MAX_STACKED, MountsLeftError, remove_tree

log = structlog.get_logger(__name__)

TRASH = ".deleting"  # beside the runs' directories: no run id starts with a dot


class FilesRemainError(UnavailableError):
    title, slug = "Files not removed", "files-remain"


class FilesRemainFullError(FilesRemainError):
    """Not set aside for want of room (the trash's directory not made): the disk is full, as
    a store that refuses the delete says (507), not a fault to retry elsewhere."""

    status, title, slug = StorageFullError.status, StorageFullError.title, StorageFullError.slug


class Removal:
    """Deletes runs (a request's, retention's) and empties the trash, never of a delete that
    is under way: its files may yet have to be put back."""

    def __init__(self, store: Store, executor: Executor) -> None:
        self.store = store
        self.trash = executor.paths(TRASH).root  # DATA_DIR/runs/.deleting
        self.executor = executor
        self._under_way: set[str] = set()  # run ids whose files are set aside

    async def delete(self, run_id: str) -> bool:
        """The run's record and files; False when the record was gone already (its files,
        if any, are removed all the same). Shielded: a caller that goes away mid-way cannot
        leave the files set aside with the record kept, or put back with the record gone."""
        return await asyncio.shield(self._delete(run_id))

    async def _delete(self, run_id: str) -> bool:
        root = self.executor.paths(run_id).root
        self._under_way.add(run_id)
        try:
            try:
                aside = await asyncio.to_thread(_set_aside, root, self.trash / run_id)
            except OSError as exc:
                log.warning("run_files_not_set_aside", run_id=run_id, error=str(exc))
                full = exc.errno in FULL_ERRNOS
                raise (FilesRemainFullError if full else FilesRemainError)(
                    f"the files of run {run_id} could not be set aside for removal "
                    f"({exc.strerror or exc}); nothing was changed: retry"
                ) from None
            try:
                deleted = await self.store.delete_run(run_id)
            except BaseException:
                if aside is not None:
                    await asyncio.to_thread(_put_back, aside, root, run_id)
                raise
            if aside is not None:  # under way still: a trash sweep meanwhile leaves it to us
                await asyncio.to_thread(_discard, aside, run_id)
        finally:
            self._under_way.discard(run_id)
        return deleted

    async def empty_trash(self) -> int:
        """Remove what earlier deletes left in the trash; how many entries are left."""
        return await asyncio.to_thread(_empty, self.trash, frozenset(self._under_way))


def _set_aside(root: Path, aside: Path) -> Path | None:
    """Blocking: `root` moved to `aside`; None when the run has no files."""
    failpoints.check("removal")
    _check_runs(aside.parent)  # before the trash is made: never in another file system
    try:
        aside.parent.mkdir()
    except FileExistsError:
        pass
    except FileNotFoundError:
        return None  # no runs' directory: no run has files
    _check_trash(aside.parent)
    try:
        os.rename(root, aside)  # noqa: PTH104
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.EBUSY:  # the run's directory itself is a mount point
            _detach_root(root, exc)
            os.rename(root, aside)  # noqa: PTH104
            return aside
        if exc.errno == errno.EXDEV:  # something was mounted since the trash was checked
            raise OSError(
                exc.errno,
                f"a mount point covers {root} or {aside.parent} (a rename across mounts is "
                "refused): unmount it, then retry",
            ) from None
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        _remove(aside, "")  # an earlier delete's leftover under the same name
        os.rename(root, aside)  # noqa: PTH104
    return aside


def _check_runs(trash: Path) -> Place | None:
    """Blocking: the anchor of the runs' directory the trash is in, if one was recorded;
    OSError (EXDEV) if a mount covers that directory."""
    anchored = anchor_of(trash)
    if anchored is None:
        return None
    top, place = anchored
    try:
        moved = covered(top, place)
    except FileNotFoundError:
        return place  # no runs' directory: no run has files
    if moved:
        warn_once("runs_dir_is_a_mount_point", top)
        raise OSError(
            errno.EXDEV,
            f"a mount point covers the runs' directory {top}: nothing under it is removed "
            f"until it is unmounted (umount -l {top})",
        )
    return place


def _check_trash(trash: Path) -> None:
    """Blocking: OSError (EXDEV, saying what to unmount) unless the runs' directory and its
    trash are on the mount the runs' directory was on at start; a mount over the trash is
    detached first, if the kernel lets us. Nothing is checked with no anchor recorded."""
    place = _check_runs(trash)
    if place is None:
        return
    for _ in range(MAX_STACKED):
        if not covered(str(trash), place):
            return
        refused = detach_path(str(trash))
        if refused is not None:
            warn_once("trash_is_a_mount_point", trash, error=refused.strerror)
            raise OSError(
                errno.EXDEV,
                f"a mount point covers the trash {trash} and the server may not detach it "
                f"({refused.strerror}): nothing is removed there until it is unmounted "
                f"(umount -l {trash})",
            )
        log.warning("trash_mount_detached", path=str(trash))
        with contextlib.suppress(FileExistsError):
            trash.mkdir()  # what the mount covered: the trash, or nothing
    warn_once("trash_is_a_mount_point", trash, error=f"more than {MAX_STACKED} mounts")
    raise OSError(errno.EXDEV, f"more than {MAX_STACKED} mounts cover the trash {trash}")


def _detach_root(root: Path, exc: OSError) -> None:
    """A mount over the run's directory (a rename of it is refused): detached, as mounts
    under it are, if the kernel lets us; else the delete is refused, saying what to do."""
    if place_of(str(root)) == place_of(str(root.parent)):
        raise exc  # busy for another reason: said as it is
    refused = detach_path(str(root))
    if refused is not None:
        raise OSError(
            exc.errno,
            f"{root.name} is a mount point the server may not detach ({refused.strerror}): "
            f"unmount it (umount -l {root}), then retry",
        ) from None
    _said_detached(["."], root.name)


def _put_back(aside: Path, root: Path, run_id: str) -> None:
    try:
        os.rename(aside, root)  # noqa: PTH104
    except OSError as exc:  # the record stays, its files in the trash: a retry removes them
        log.warning("run_files_not_put_back", run_id=run_id, error=str(exc))


def _discard(aside: Path, run_id: str) -> None:
    try:
        _remove(aside, run_id)
    except OSError as exc:
        log.warning("run_files_left_in_trash", run_id=run_id, error=str(exc))


def _remove(tree: Path, run_id: str) -> None:
    """remove_tree, mounts met on the way detached if the kernel lets us, and each said."""
    try:
        detached = remove_tree(tree, detach_mounts=True)
    except MountsLeftError as exc:
        _said_detached(exc.detached, run_id or tree.name)
        raise
    _said_detached(detached, run_id or tree.name)


def _said_detached(detached: list[str], run_id: str) -> None:
    if detached:  # the program's doing, not the server's: an operator may want to know
        log.warning("run_mounts_detached", run_id=run_id, mounts=detached[:20])


def _empty(trash: Path, skip: frozenset[str]) -> int:
    try:
        _check_trash(trash)
        entries = list(trash.iterdir())
    except FileNotFoundError:
        return 0
    except NotADirectoryError:  # readiness names it (data_dir.py); the sweep goes on
        log.warning("trash_not_a_directory", path=str(trash))
        return 0
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        return 0  # a mount covers it (warned of once, by name): its entries are not ours
    left = 0
    for entry in entries:
        if entry.name in skip:
            continue
        try:
            _remove(entry, entry.name)
        except OSError as exc:
            left += 1
            log.warning("trash_not_emptied", name=entry.name, error=str(exc))
    return left
