"""Directory trees of any depth, walked (and removed: tree_removal.py) without recursion and
without following symbolic links: one directory descriptor open at a time, names relative to
it (so no path ever grows past PATH_MAX), and each step back up through '..' checked against
the inode we came down from, so a directory moved during the walk stops it instead of
leading elsewhere. No walk leaves the mount its root is on (mounts.py): a directory another
file system (or a bind mount) covers is not entered, and a root that is itself a mount point
is not walked.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

from runyard.beneath import DIR_FLAGS, open_beneath
from runyard.mounts import (
    CrossesMountError,
    anchor_of,
    differs,
    mount_id,
    warn_once,
)

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
