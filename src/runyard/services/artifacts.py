"""Artifacts: a run's declared output files, listed and opened without escaping its workspace.

Opening walks the path one component at a time with O_NOFOLLOW relative to the directory
opened before, so a symlink planted by the program (even after listing) is never followed,
and the check and the open are the same act: no time-of-check/time-of-use gap. Each
directory opened, and the file, must be on the mount the runs' directory was on at start
(mounts.py: a mount over the workspace, the run's directory or DATA/runs itself moves the
workspace off it), or, with no anchor recorded, on the workspace's, and the workspace on its
parent's: a mount point the program left leads outside as a link does, and is refused as one.
"""

from __future__ import annotations

import contextlib
import errno
import mimetypes
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from runyard.beneath import DIR_FLAGS, open_beneath
from runyard.errors import ForbiddenPathError, NotFoundError, raise_if_servers_fault
from runyard.mounts import CrossesMountError, Place, anchor_of, differs, mount_id, warn_once
from runyard.services.artifact_globs import compiled

MAX_LISTED = 10_000


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    path: str
    size: int
    modified_at: float


def matches(path: str, patterns: list[str]) -> bool:
    return any(compiled(p)(path) for p in patterns)


def check_relative(path: str) -> list[str]:
    """The components of a safe relative path, or ForbiddenPathError saying why not."""
    if not path or "\0" in path:
        raise ForbiddenPathError("artifact path is empty or contains a NUL byte", field="path")
    if path.startswith("/") or "\\" in path:
        raise ForbiddenPathError("artifact paths are relative, with '/' separators", field="path")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ForbiddenPathError("artifact path has an empty, '.' or '..' component", field="path")
    return parts


@dataclass(frozen=True, slots=True)
class OpenArtifact:
    fd: int  # the caller closes it
    stat: os.stat_result
    media_type: str


def open_artifact(workspace: Path, path: str, patterns: list[str]) -> OpenArtifact:
    """Blocking. The artifact opened for reading, its stat and media type."""
    parts = check_relative(path)
    if not matches(path, patterns):
        raise NotFoundError(f"{path!r} is not a declared artifact of this run", field="path")
    try:
        fd = open_beneath(workspace, DIR_FLAGS)  # no link on the way to it either
    except OSError as exc:
        raise_if_servers_fault(exc, "the artifact")
        raise NotFoundError("this run has no workspace") from None
    try:
        anchored = anchor_of(workspace)
        leaf, st, named = _open_leaf(fd, parts, anchored[1] if anchored is not None else None)
    except FileNotFoundError:
        raise NotFoundError(f"artifact {path!r} does not exist", field="path") from None
    except CrossesMountError as exc:
        if exc.filename == ".":
            warn_once("run_workspace_on_another_mount", workspace)
        raise ForbiddenPathError(
            f"artifact {path!r} is under a mount point: another file system's files are "
            "never served",
            field="path",
        ) from None
    except OSError as exc:
        raise_if_servers_fault(exc, "the artifact")
        # ELOOP / ENOTDIR: a symlink or a non-directory where a directory should be
        raise ForbiddenPathError(
            f"artifact {path!r} is not a plain file inside the workspace", field="path"
        ) from None
    # A hardlink could make a file from outside the workspace appear inside it, and one
    # dropped between the open and the fstat leaves a count of one: the name is looked at too
    if not stat.S_ISREG(st.st_mode) or not _only_name(st, named):
        os.close(leaf)
        raise ForbiddenPathError(
            f"artifact {path!r} is not a plain file inside the workspace", field="path"
        )
    with contextlib.suppress(OSError):
        os.set_blocking(leaf, True)
    # mimetypes reads system files on first use: keep that here, off the event loop
    media_type = mimetypes.guess_type(parts[-1])[0] or "application/octet-stream"
    return OpenArtifact(leaf, st, media_type)


def _only_name(st: os.stat_result, named: os.stat_result) -> bool:
    """Whether the file open (`st`, its fstat) is the workspace's own: its one link, the name
    it was opened by still its (`named`). A hard link made by a program brings another file's
    contents under a workspace's name; dropping it between the open and a look at the count
    (a probe, 300 tries: /etc/shadow served) leaves the count at one, but not the name."""
    return (
        st.st_nlink == 1
        and (named.st_dev, named.st_ino) == (st.st_dev, st.st_ino)
        and named.st_nlink == 1
    )


def _looked_at_again(directory: int, name: str, before: os.stat_result) -> os.stat_result:
    """The name's stat once its file is open, refused (ESTALE) unless it is the one taken
    before the open: linked or unlinked meanwhile, the kernel drops a file's count before its
    name, so a single look can see a dropping link's file with a count of one."""
    named = os.stat(name, dir_fd=directory, follow_symlinks=False)
    if (before.st_dev, before.st_ino, before.st_nlink) != (
        named.st_dev, named.st_ino, named.st_nlink,
    ):  # fmt: skip
        raise OSError(errno.ESTALE, "the name changed hands as it was opened")
    return named


def _open_leaf(
    fd: int, parts: list[str], anchor: Place | None
) -> tuple[int, os.stat_result, os.stat_result]:
    """The file at `parts` under the workspace open as `fd` (which this closes), the
    workspace and each step on the `anchor`'s mount (CrossesMountError if one is not); with
    none, each on the workspace's, the workspace on its parent's. With its fstat and the stat
    of its name in its directory, taken once it was open."""
    try:
        here = os.fstat(fd)
        dev, mnt = here.st_dev, mount_id(fd)
        if anchor is not None:
            if not anchor.holds(here, mnt):
                raise CrossesMountError(".")
        else:
            up = os.open("..", DIR_FLAGS, dir_fd=fd)
            try:
                if differs(os.fstat(up), mount_id(up), dev, mnt):
                    raise CrossesMountError(".")
            finally:
                os.close(up)
        for part in parts[:-1]:
            nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
            if differs(os.fstat(fd), mount_id(fd), dev, mnt):
                raise CrossesMountError(part)
        before = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        leaf = os.open(
            parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=fd
        )
        try:
            named = _looked_at_again(fd, parts[-1], before)
            st = os.fstat(leaf)
            crossed = differs(st, mount_id(leaf), dev, mnt)
        except BaseException:
            os.close(leaf)
            raise
    finally:
        os.close(fd)
    if crossed:
        os.close(leaf)
        raise CrossesMountError(parts[-1])
    return leaf, st, named
