"""Directory trees removed without recursion and without following symbolic links, on the
walk's cursor (fstree.py): one directory descriptor open at a time, each step back up checked
against the inode it came down from. No removal crosses a mount point: one met is detached
(when asked) or left in place with its files, and said so (MountsLeftError).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from runyard.fstree import DirCursor
from runyard.mounts import CrossesMountError, detach, detach_path

MAX_STACKED = 16  # mounts detached from one name before it is left as it is


class MountsLeftError(OSError):
    """A removal met mount points it did not detach: they are left in place, their files
    untouched, with the directories leading to them; the rest of the tree is removed."""

    def __init__(self, root: Path, left: list[str], detached: list[str]) -> None:
        named = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
        why = f"mount points left in place, their files untouched: {named}"
        super().__init__(errno.EBUSY, why, str(root))
        self.detached = detached


@dataclass
class _Mounts:
    """The mount points one removal met: detached (when it may try and the kernel lets it:
    umount2 MNT_DETACH leaves the mounted files as they are), or left."""

    may_detach: bool
    detached: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)

    def uncover(self, cursor: DirCursor, name: str, rel: str) -> bool:
        """True: what was mounted over `name` is detached, the tree's own entry in view."""
        if not self.may_detach:
            self.left.append(rel)
            return False
        refused = detach(cursor.fd, name)
        if refused is not None:
            self.left.append(f"{rel} (not detached: {refused.strerror})")
            return False
        self.detached.append(rel)
        return True


@dataclass
class _Level:
    name: str  # in its parent
    pending: list[str]  # subdirectories still to empty
    kept: bool  # a mount point left under it: it stays, as its parents do


def _enter(cursor: DirCursor, name: str, mounts: _Mounts, rel: str) -> bool:
    """Enter a directory to empty it, granting ourselves access if the program removed it
    (its own mode: never a mounted directory's), and uncovering it if a mount is over it.
    False: a mount is left over it, not entered."""

    def enter() -> bool | None:
        try:
            cursor.down(name)
        except CrossesMountError:
            return None
        except PermissionError:
            if cursor.crosses(name, cursor.lstat(name)):
                return None
            os.chmod(name, stat.S_IRWXU, dir_fd=cursor.fd)
            cursor.down(name)
        return True

    return _uncovering(enter, cursor, name, mounts, rel)


def _unlink(cursor: DirCursor, name: str, mounts: _Mounts, rel: str) -> bool:
    """Unlink a non-directory; False: a mount is left over it (unlinking one fails with
    EBUSY, and never changes the mounted file)."""

    def unlink() -> bool | None:
        try:
            os.unlink(name, dir_fd=cursor.fd)
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY or not cursor.crosses(name, cursor.lstat(name)):
                raise
            return None
        return True

    return _uncovering(unlink, cursor, name, mounts, rel)


def _uncovering(
    act: Callable[[], bool | None], cursor: DirCursor, name: str, mounts: _Mounts, rel: str
) -> bool:
    """`act` on `name` until it is done (True), a mount over it uncovered each time one is in
    its way (`act` gives None); False: one is left there (it may not be detached, or more
    than MAX_STACKED are stacked)."""
    for _ in range(MAX_STACKED):
        done = act()
        if done is not None:
            return done
        if not mounts.uncover(cursor, name, rel):
            return False
    mounts.left.append(f"{rel} (more than {MAX_STACKED} mounts over it)")
    return False


def _clear_files(cursor: DirCursor, mounts: _Mounts, where: str) -> _Level:
    """Unlink every non-directory here; the level, with the subdirectories to empty."""
    level = _Level(where.rpartition("/")[2], [], kept=False)
    for name, is_dir in cursor.entries()[0]:
        if is_dir:
            level.pending.append(name)
        elif not _unlink(cursor, name, mounts, _join(where, name)):
            level.kept = True
    return level


def _join(where: str, name: str) -> str:
    return f"{where}/{name}" if where else name


def _open_root(root: Path, mounts: _Mounts) -> DirCursor:
    """The root, uncovered if it is a mount point itself (MountsLeftError if it stays one)."""
    for _ in range(MAX_STACKED):
        cursor = DirCursor(root)
        try:
            if not cursor.root_is_mount_point():
                return cursor
        except BaseException:
            cursor.close()
            raise
        cursor.close()
        refused = detach_path(str(root)) if mounts.may_detach else None
        if not mounts.may_detach or refused is not None:
            why = f" (not detached: {refused.strerror})" if refused is not None else ""
            raise MountsLeftError(root, [f". (the tree's root){why}"], mounts.detached)
        mounts.detached.append(".")
    raise MountsLeftError(root, [f". (more than {MAX_STACKED} mounts over it)"], mounts.detached)


def _empty(cursor: DirCursor, mounts: _Mounts) -> None:
    """Everything under the cursor's root removed, but for mounts left and what leads there."""
    levels = [_clear_files(cursor, mounts, "")]
    while levels:
        level = levels[-1]
        if level.pending:
            child = level.pending.pop()
            rel = "/".join([*(lv.name for lv in levels[1:]), child])
            try:
                entered = _enter(cursor, child, mounts, rel)
            except FileNotFoundError:
                continue
            if entered:
                levels.append(_clear_files(cursor, mounts, rel))
            else:
                level.kept = True
            continue
        levels.pop()
        if levels:
            cursor.up()
            if level.kept:
                levels[-1].kept = True
                continue
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(level.name, dir_fd=cursor.fd)


def remove_tree(root: Path, *, detach_mounts: bool = False) -> list[str]:
    """Blocking. Remove `root` and everything under it, at any depth, following no link and
    crossing no mount: one met (the root included) is detached if `detach_mounts` says to
    try and the kernel lets us, and what it covered removed; else it is left, with the
    directories leading to it, and MountsLeftError raised once the rest is removed. Returns
    the mount points detached (paths under the root). Raises OSError when something could
    not be removed (the caller keeps its record). What vanishes meanwhile is removed all the
    same: another remover of the same tree (a delete and a retention pass emptying the
    trash) is no failure of either."""
    mounts = _Mounts(detach_mounts)
    try:
        cursor = _open_root(root, mounts)
    except FileNotFoundError:
        return mounts.detached
    except MountsLeftError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        root.unlink()  # a file or a link where the tree was: the link goes, not its target
        return mounts.detached
    try:
        _empty(cursor, mounts)
    finally:
        cursor.close()
    if mounts.left:
        raise MountsLeftError(root, mounts.left, mounts.detached)
    with contextlib.suppress(FileNotFoundError):
        root.rmdir()
    return mounts.detached
