"""Directory trees of any depth, walked and removed without recursion and without following
symbolic links: one directory descriptor open at a time, names relative to it (so no path
ever grows past PATH_MAX), and each step back up through '..' checked against the inode we
came down from, so a directory moved during the walk stops it instead of leading elsewhere.
No walk leaves the mount its root is on (mounts.py): a directory another file system (or a
bind mount) covers is not entered, and a root that is itself a mount point is not walked.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from runyard.beneath import open_beneath
from runyard.mounts import (
    CrossesMountError,
    anchor_of,
    detach,
    detach_path,
    differs,
    mount_id,
    warn_once,
)

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# a root that is none of the walk's: a walk of it yields nothing (a program may make its
# workspace a file, or a link to any directory: a probe had the listing answer 500 for one)
_NO_TREE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)


Entry = tuple[str, bool]  # a name in its directory, and whether it is a real directory
# told of a directory read in part: its components, and the names of it that were read
OnPart = Callable[[tuple[str, ...], set[str]], None] | None


class TreeMovedError(OSError):
    """A directory was moved while it was being walked: the walk stops rather than guess."""


class DirCursor:
    """One open directory, moved down by name and up through '..', never onto another mount."""

    def __init__(self, root: Path) -> None:
        self.fd = open_beneath(root, DIR_FLAGS)  # a run's: no link on the way either
        try:
            st = os.fstat(self.fd)
            self.dev, self.mnt = st.st_dev, mount_id(self.fd)  # the root's: the walk's bounds
        except BaseException:
            os.close(self.fd)
            raise
        self._ids = [(st.st_dev, st.st_ino)]
        self.root = root

    @property
    def depth(self) -> int:
        return len(self._ids) - 1

    def root_is_mount_point(self) -> bool:
        """Whether the root is on another mount than the runs' directory was on at start (a
        mount over it, or over a directory above it: mounts.py; warned of once), or, with no
        anchor recorded, than its parent: its files are another file system's (or a bind
        mount's), not the tree's."""
        anchored = anchor_of(self.root)
        if anchored is not None:
            place = anchored[1]
            off = self.dev != place.dev or (
                self.mnt is not None and place.mnt is not None and self.mnt != place.mnt
            )
            if off:
                warn_once("run_tree_on_another_mount", self.root)
            return off
        fd = os.open("..", DIR_FLAGS, dir_fd=self.fd)
        try:
            return differs(os.fstat(fd), mount_id(fd), self.dev, self.mnt)
        finally:
            os.close(fd)

    def down(self, name: str) -> None:
        """Enter a subdirectory; CrossesMountError (and still here) if a mount covers it."""
        fd = os.open(name, DIR_FLAGS, dir_fd=self.fd)
        try:
            st = os.fstat(fd)
            crossed = differs(st, mount_id(fd), self.dev, self.mnt)
        except BaseException:
            os.close(fd)
            raise
        if crossed:
            os.close(fd)
            raise CrossesMountError(name)
        os.close(self.fd)
        self.fd = fd
        self._ids.append((st.st_dev, st.st_ino))

    def crosses(self, name: str, st: os.stat_result) -> bool:
        """Whether the entry `name` here (`st`, its lstat) is on another mount: a file or a
        directory something is mounted over. OSError if it is gone."""
        return differs(st, mount_id(self.fd, name), self.dev, self.mnt)

    def up(self) -> None:
        fd = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.fd)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != self._ids[-2]:
            os.close(fd)
            raise TreeMovedError("a directory was moved during the walk")
        os.close(self.fd)
        self.fd = fd
        self._ids.pop()

    def entries(self, limit: int | None = None) -> tuple[list[tuple[str, bool]], bool]:
        """(name, is a real directory) of up to `limit` entries, sorted by name, and whether
        that was all of them."""
        found: list[tuple[str, bool]] = []
        complete = True
        with os.scandir(self.fd) as it:
            for entry in it:
                if limit is not None and len(found) >= limit:
                    complete = False
                    break
                found.append((entry.name, entry.is_dir(follow_symlinks=False)))
        found.sort()
        return found, complete

    def lstat(self, name: str) -> os.stat_result:
        return os.stat(name, dir_fd=self.fd, follow_symlinks=False)

    def close(self) -> None:
        os.close(self.fd)


class TreeWalker:
    """Depth-first, children in name order (so the order of relative paths compared as tuples
    of components), never following a link. Counts the entries it read and notes when a
    directory held more than `max_dir_entries` (only that many of it were seen, in the order
    the file system gives: which ones is not ours to choose)."""

    def __init__(self, root: Path, max_dir_entries: int | None = None) -> None:
        self.root = root
        self.max_dir_entries = max_dir_entries
        self.read = 0
        self.partial = False
        self._cursor: DirCursor | None = None

    def lstat(self, name: str) -> os.stat_result:
        """The entry just yielded, not followed: valid only while the walk is paused there."""
        if self._cursor is None:
            raise RuntimeError("lstat outside a walk")
        return self._cursor.lstat(name)

    def crosses(self, name: str, st: os.stat_result) -> bool:
        """Whether the entry just yielded (`st`, its lstat) is a mount point: a file something
        is mounted over has the mount's stat, not its own."""
        if self._cursor is None:
            raise RuntimeError("crosses outside a walk")
        return self._cursor.crosses(name, st)

    def _list(self, cursor: DirCursor, parts: list[str], on_part: OnPart) -> Iterator[Entry]:
        entries, complete = cursor.entries(self.max_dir_entries)
        self.read += len(entries)
        if not complete:
            self.partial = True
            if on_part is not None:
                on_part(tuple(parts), {name for name, _ in entries})
        return iter(entries)

    def _open_root(self) -> DirCursor | None:
        try:
            return DirCursor(self.root)
        except OSError as exc:
            if exc.errno in _NO_TREE:  # nothing there, a file, or a link: nothing of its own
                return None
            raise

    def walk(
        self,
        descend: Callable[[tuple[str, ...]], bool] | None = None,
        on_mount: Callable[[tuple[str, ...]], None] | None = None,
        on_part: OnPart = None,
    ) -> Generator[tuple[tuple[str, ...], bool], None, None]:
        """Yields (components, is a directory). `descend(components)` (default: always)
        says whether to enter a directory just yielded; one it would enter that a mount
        covers is not entered, and told to `on_mount`. A directory read in part (more than
        `max_dir_entries`; the root is ()) is told to `on_part` with the names that were
        read, before any of them is yielded. CrossesMountError if the root itself is a mount
        point."""
        enter = descend or (lambda _parts: True)
        if (cursor := self._open_root()) is None:
            return
        self._cursor = cursor
        try:
            if cursor.root_is_mount_point():
                raise CrossesMountError(str(self.root))
            parts: list[str] = []
            stack = [self._list(cursor, parts, on_part)]
            while stack:
                for name, is_dir in stack[-1]:
                    here = (*parts, name)
                    yield here, is_dir
                    if not is_dir or not enter(here):
                        continue
                    try:
                        cursor.down(name)
                    except CrossesMountError:
                        if on_mount is not None:
                            on_mount(here)
                        continue
                    except OSError:
                        continue  # gone, or swapped for a link or a file: not entered
                    parts.append(name)
                    stack.append(self._list(cursor, parts, on_part))
                    break
                else:
                    stack.pop()
                    if parts:
                        cursor.up()
                        parts.pop()
        finally:
            self._cursor = None
            cursor.close()


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
