"""Directory trees of any depth, walked and removed without recursion and without following
symbolic links: one directory descriptor open at a time, names relative to it (so no path
ever grows past PATH_MAX), and each step back up through '..' checked against the inode we
came down from, so a directory moved during the walk stops it instead of leading elsewhere.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class TreeMovedError(OSError):
    """A directory was moved while it was being walked: the walk stops rather than guess."""


class DirCursor:
    """One open directory, moved down by name and up through '..'."""

    def __init__(self, root: Path) -> None:
        self.fd = os.open(root, DIR_FLAGS)
        st = os.fstat(self.fd)
        self._ids = [(st.st_dev, st.st_ino)]

    @property
    def depth(self) -> int:
        return len(self._ids) - 1

    def down(self, name: str) -> None:
        fd = os.open(name, DIR_FLAGS, dir_fd=self.fd)
        st = os.fstat(fd)
        os.close(self.fd)
        self.fd = fd
        self._ids.append((st.st_dev, st.st_ino))

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
    directory held more than `max_dir_entries` (only that many of it were seen)."""

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

    def _list(self, cursor: DirCursor) -> Iterator[tuple[str, bool]]:
        entries, complete = cursor.entries(self.max_dir_entries)
        self.read += len(entries)
        self.partial = self.partial or not complete
        return iter(entries)

    def walk(
        self, descend: Callable[[tuple[str, ...]], bool] | None = None
    ) -> Generator[tuple[tuple[str, ...], bool], None, None]:
        """Yields (components, is a directory). `descend(components)` (default: always)
        says whether to enter a directory just yielded."""
        enter = descend or (lambda _parts: True)
        cursor = self._cursor = DirCursor(self.root)
        try:
            parts: list[str] = []
            stack = [self._list(cursor)]
            while stack:
                for name, is_dir in stack[-1]:
                    here = (*parts, name)
                    yield here, is_dir
                    if not is_dir or not enter(here):
                        continue
                    try:
                        cursor.down(name)
                    except OSError:
                        continue  # gone, or swapped for a link or a file: not entered
                    parts.append(name)
                    stack.append(self._list(cursor))
                    break
                else:
                    stack.pop()
                    if parts:
                        cursor.up()
                        parts.pop()
        finally:
            self._cursor = None
            cursor.close()


def _open_writable(cursor: DirCursor, name: str) -> None:
    """Enter a directory to empty it, granting ourselves access if the program removed it."""
    try:
        cursor.down(name)
    except PermissionError:
        os.chmod(name, stat.S_IRWXU, dir_fd=cursor.fd)
        cursor.down(name)


def _clear_files(cursor: DirCursor) -> list[str]:
    """Unlink every non-directory here; return the subdirectories."""
    subdirs = []
    for name, is_dir in cursor.entries()[0]:
        if is_dir:
            subdirs.append(name)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=cursor.fd)
    return subdirs


def remove_tree(root: Path) -> None:
    """Blocking. Remove `root` and everything under it, at any depth, following no link.
    Raises OSError when something could not be removed (the caller keeps its record). What
    vanishes meanwhile is removed all the same: another remover of the same tree (a delete
    and a retention pass emptying the trash) is no failure of either."""
    try:
        cursor = DirCursor(root)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        root.unlink()  # a file or a link where the tree was: the link goes, not its target
        return
    try:
        # each level: (its name in the parent, subdirectories still to empty)
        levels: list[tuple[str, list[str]]] = [("", _clear_files(cursor))]
        while levels:
            name, pending = levels[-1]
            if pending:
                child = pending.pop()
                try:
                    _open_writable(cursor, child)
                except FileNotFoundError:
                    continue
                levels.append((child, _clear_files(cursor)))
                continue
            levels.pop()
            if levels:
                cursor.up()
                with contextlib.suppress(FileNotFoundError):
                    os.rmdir(name, dir_fd=cursor.fd)
    finally:
        cursor.close()
    with contextlib.suppress(FileNotFoundError):
        root.rmdir()
