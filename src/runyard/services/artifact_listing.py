"""Artifact listings: bounded pages of a run's declared outputs, walked without recursion on a
small thread pool of their own, so no workspace (however large or deep) can hold the threads
that submissions and reads need.

Order is the name order of path components; a cursor is the last entry a page walked, and the
next page resumes strictly after it. A page ends at `limit` artifacts or once `walk_max`
entries past the cursor were walked, whichever comes first, and no directory is read past
`walk_max` entries, so every request's work is bounded.

Nothing the globs declare is left out in silence, by a bound or otherwise: an entry that
cannot be served (a name no request path can carry, a link, a hard link, not a regular file,
a mount point) is named among the page's `skipped`, with the reason, and so is a directory
read in part (which of its entries were read is the file system's order, so the rest can lie
anywhere in the listing's), on every page that reads it, naming the bound and its setting;
a page is partial exactly when it names something. No walk crosses a mount point
(fstree.py): another file system's files, or a bind mount's, are neither listed nor counted
in the workspace's size.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import re
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from runyard.errors import ForbiddenPathError, InvalidInputError
from runyard.fstree import TreeMovedError, TreeWalker
from runyard.mounts import CrossesMountError
from runyard.services.artifacts import matches

T = TypeVar("T")
PAGE_DEFAULT = 1000
PAGE_MAX = 10_000
# Longer paths are left out: no request path could name them (api/inputs.py refuses request
# paths over 4096 characters, and the route's own prefix takes some of that).
MAX_LISTED_PATH = 4000


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    path: str
    size: int
    modified_at: float


@dataclass(frozen=True, slots=True)
class SkippedEntry:
    path: str  # to be shown, not asked for: bytes that are not UTF-8 as \xNN escapes
    reason: str


@dataclass(frozen=True, slots=True)
class ArtifactPage:
    artifacts: list[ArtifactInfo]
    next_cursor: str | None  # None: nothing follows
    skipped: list[SkippedEntry] = field(default_factory=list)  # the first MAX_SKIPPED
    skipped_omitted: int = 0  # and how many more

    @property
    def partial(self) -> bool:
        # a page that left something out says what (a bare flag was set for a directory
        # read in part, and nothing told which, nor led to the files it held back)
        return bool(self.skipped) or self.skipped_omitted > 0


# Names are the file system's bytes, held as Python holds them (os.fsdecode: bytes that are
# not UTF-8 as lone surrogates); a cursor carries them back exactly.
def encode_cursor(parts: tuple[str, ...]) -> str:
    return base64.urlsafe_b64encode(os.fsencode("/".join(parts))).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, ...]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        text = os.fsdecode(raw)
    except (binascii.Error, ValueError):
        raise InvalidInputError("cursor is not one this server gave", field="cursor") from None
    parts = tuple(text.split("/"))
    if not text or "\0" in text or any(p in ("", ".", "..") for p in parts):
        raise InvalidInputError("cursor is not one this server gave", field="cursor")
    return parts


def _literal_prefix(pattern: str) -> tuple[str, ...]:
    """The directories a glob names before its first wildcard: `outputs/*.csv` -> (outputs,)."""
    fixed: list[str] = []
    for part in pattern.split("/")[:-1]:
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    return tuple(fixed)


_UNNAMEABLE = re.compile("[\x00-\x1f\x7f-\x9f]")
MAX_SKIPPED = 100  # named on one page; past that, counted


def _unnameable(rel: str) -> str | None:
    """Why no client could ask for this path again, if it could not: bytes that are not
    UTF-8 (a JSON string cannot carry them, nor a request path name them), or a control
    character, which no request path may carry (api/inputs.py refuses them)."""
    try:
        rel.encode()
    except UnicodeEncodeError:
        return "its name is not UTF-8: no request path can name it"
    if _UNNAMEABLE.search(rel) is not None:
        return "its name holds a control character: no request path can carry it"
    if "\\" in rel:  # check_relative refuses it, as the route does its encoding (%5C)
        return "its name holds a backslash: artifact paths are '/'-separated, none can name it"
    if len(rel) > MAX_LISTED_PATH:
        return f"its path is over {MAX_LISTED_PATH} characters: no request path can hold it"
    return None


MOUNT_POINT = "a mount point: another file system's files are never listed or served"
WALK_MAX_SETTING = "RUNYARD_ARTIFACT_WALK_MAX"  # config.py: artifact_walk_max


def read_in_part(walk_max: int) -> str:
    """Why a directory is named: it held more entries than a listing reads of one."""
    return (
        f"more than {walk_max} entries: not all listed (a listing reads {walk_max} of a "
        f"directory, in no set order: {WALK_MAX_SETTING})"
    )


def _wild(component: str) -> bool:
    return any(c in component for c in "*?")  # services/artifacts.py: `[` is a literal


def _declares_unread(parts: tuple[str, ...], read: set[str], patterns: list[str]) -> bool:
    """Whether a glob may declare an entry under the directory `parts` that its read in
    part left out (`read`: the names it did read). A glob that reaches it by literal names
    only leaves out nothing if the next one was read: a workspace whose top holds a
    hundred thousand scratch files but `outputs` among those read lost nothing of
    `outputs/**`."""
    for pattern in patterns:
        components = pattern.split("/")
        for i, component in enumerate(components):
            if "**" in component:
                return True  # any depth from here: any entry may lead to a declared one
            if i == len(parts):
                if _wild(component) or component not in read:
                    return True
                break
            if not matches(parts[i], [component]):
                break  # this glob declares nothing under `parts`
    return False


def _refused(st: os.stat_result) -> str | None:
    """Why a declared entry is not served (as open_artifact refuses it), if it is not."""
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link: links are never followed"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_nlink != 1:
        return "a hard link: it could be a file from outside the workspace"
    return None


def shown(rel: str) -> str:
    """A path as it can be shown: its bytes that are not UTF-8 as \\xNN, at most
    MAX_LISTED_PATH characters."""
    text = os.fsencode(rel).decode("utf-8", "backslashreplace")
    return text if len(text) <= MAX_LISTED_PATH else text[: MAX_LISTED_PATH - 1] + "\u2026"


@dataclass
class _Found:
    artifacts: list[ArtifactInfo] = field(default_factory=list)
    skipped: list[SkippedEntry] = field(default_factory=list)
    skipped_omitted: int = 0

    def skip(self, rel: str, reason: str) -> None:
        if len(self.skipped) < MAX_SKIPPED:
            self.skipped.append(SkippedEntry(shown(rel), reason))
        else:
            self.skipped_omitted += 1

    def mount_point(self, parts: tuple[str, ...], after: tuple[str, ...]) -> None:
        """A directory the walk would have entered that a mount covers."""
        if parts > after:  # one the cursor is at was named on the page before (_page_end)
            self.skip("/".join(parts), MOUNT_POINT)

    def read_in_part(
        self, parts: tuple[str, ...], read: set[str], patterns: list[str], walk_max: int
    ) -> None:
        """A directory read in part, named on every page that reads it: what it held back
        may fall in any page's range."""
        if _declares_unread(parts, read, patterns):
            self.skip("/".join(parts) or ".", read_in_part(walk_max))

    def page(self, next_cursor: str | None) -> ArtifactPage:
        return ArtifactPage(self.artifacts, next_cursor, self.skipped, self.skipped_omitted)


def _consider(
    walker: TreeWalker, parts: tuple[str, ...], patterns: list[str], found: _Found
) -> None:
    rel = "/".join(parts)
    if not matches(rel, patterns):
        return
    try:
        st = walker.lstat(parts[-1])
    except OSError:
        return  # gone meanwhile
    why = _refused(st) or _unnameable(rel)
    if why is None:
        try:
            why = MOUNT_POINT if walker.crosses(parts[-1], st) else None
        except OSError:
            return
    if why is not None:
        found.skip(rel, why)
        return
    found.artifacts.append(ArtifactInfo(rel, st.st_size, st.st_mtime))


def list_page(
    workspace: Path, patterns: list[str], *, after: tuple[str, ...] | None, limit: int,
    walk_max: int,
) -> ArtifactPage:  # fmt: skip
    """Blocking. Regular files matching the job's globs after `after`; links never followed,
    hard links (which could bring in a file from outside) and mount points left out. A
    workspace that is itself a mount point is refused."""
    try:
        return _walk_page(workspace, patterns, after=after, limit=limit, walk_max=walk_max)
    except CrossesMountError:
        raise ForbiddenPathError(f"this run's workspace is {MOUNT_POINT}") from None


def _walk_page(
    workspace: Path, patterns: list[str], *, after: tuple[str, ...] | None, limit: int,
    walk_max: int,
) -> ArtifactPage:  # fmt: skip
    found = _Found()
    after = after or ()

    roots = [_literal_prefix(p) for p in patterns]

    def descend(parts: tuple[str, ...]) -> bool:
        # a directory wholly before the cursor holds nothing of this page, and one beside
        # every glob's fixed leading directories holds nothing declared
        n = len(parts)
        if not any(r[:n] == parts[: len(r)] for r in roots):
            return False
        return parts > after or after[:n] == parts

    walker = TreeWalker(workspace, max_dir_entries=walk_max)
    walk = walker.walk(
        descend,
        on_mount=lambda parts: found.mount_point(parts, after),
        on_part=lambda parts, read: found.read_in_part(parts, read, patterns, walk_max),
    )
    try:
        visited = 0
        for parts, is_dir in walk:
            if parts <= after:
                continue
            visited += 1
            if not is_dir:
                _consider(walker, parts, patterns, found)
            if len(found.artifacts) >= limit or visited >= walk_max:
                # a full page, or the walk's budget spent: the next page goes on from here
                if is_dir:
                    _page_end(walker, parts, descend, found)
                return found.page(encode_cursor(parts))
    except (TreeMovedError, FileNotFoundError):
        pass  # the program moved things while we looked: what was seen so far stands
    finally:
        walk.close()  # its directory descriptor, now rather than when collected
    return found.page(None)


def _page_end(
    walker: TreeWalker, parts: tuple[str, ...], descend: Callable[[tuple[str, ...]], bool],
    found: _Found,
) -> None:  # fmt: skip
    """A page ends at a directory it has not entered: the next, resumed there, takes it for
    named, so a mount over it is named now (it was named by neither, and silently held back
    all it covered)."""
    if not descend(parts):
        return  # one the walk would not enter holds nothing declared
    try:
        st = walker.lstat(parts[-1])
        if stat.S_ISDIR(st.st_mode) and walker.crosses(parts[-1], st):
            found.skip("/".join(parts), MOUNT_POINT)
    except OSError:
        pass  # gone meanwhile: the next page does not meet it either


def workspace_usage(workspace: Path, walk_max: int) -> tuple[int, bool]:
    """Blocking. (bytes of disk the workspace's entries take, whether all were counted).
    Allocated blocks, not apparent sizes: a sparse file costs what it really holds."""
    walker = TreeWalker(workspace, max_dir_entries=walk_max)
    walk = walker.walk()
    total = 0
    try:
        for parts, _ in walk:
            if walker.read > walk_max:
                return total, False
            try:
                st = walker.lstat(parts[-1])
                if not walker.crosses(parts[-1], st):  # a file mounted over is not ours
                    total += st.st_blocks * 512
            except OSError:
                continue
    except (TreeMovedError, FileNotFoundError, CrossesMountError):
        return total, False
    finally:
        walk.close()
    return total, not walker.partial


class ListingPool:
    """The few threads artifact listings may use. Waiting happens on the event loop, so a
    client that gives up while queued costs nothing, and the default pool stays free."""

    def __init__(self, threads: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="runyard-artifacts")
        self._slots = asyncio.Semaphore(threads)

    async def run(self, work: Callable[[], T]) -> T:
        async with self._slots:
            return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
