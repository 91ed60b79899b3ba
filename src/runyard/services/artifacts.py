"""Artifacts: a run's declared output files, listed and opened without escaping its workspace.

Opening walks the path one component at a time with O_NOFOLLOW relative to the directory
opened before, so a symlink planted by the program (even after listing) is never followed,
and the check and the open are the same act: no time-of-check/time-of-use gap.
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import re
import stat
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from runyard.errors import ForbiddenPathError, NotFoundError, raise_if_servers_fault

MAX_LISTED = 10_000


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    path: str
    size: int
    modified_at: float


@lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """`**` spans directories, `*` and `?` stay within one component."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def matches(path: str, patterns: list[str]) -> bool:
    return any(_glob_regex(p).match(path) for p in patterns)


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
    flags_dir = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(workspace, flags_dir)
    except OSError as exc:
        raise_if_servers_fault(exc, "the artifact")
        raise NotFoundError("this run has no workspace") from None
    try:
        for part in parts[:-1]:
            nxt = os.open(part, flags_dir, dir_fd=fd)
            os.close(fd)
            fd = nxt
        leaf = os.open(
            parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=fd
        )
    except FileNotFoundError:
        raise NotFoundError(f"artifact {path!r} does not exist", field="path") from None
    except OSError as exc:
        raise_if_servers_fault(exc, "the artifact")
        # ELOOP / ENOTDIR: a symlink or a non-directory where a directory should be
        raise ForbiddenPathError(
            f"artifact {path!r} is not a plain file inside the workspace", field="path"
        ) from None
    finally:
        os.close(fd)
    st = os.fstat(leaf)
    # A hardlink could make a file from outside the workspace appear inside it.
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(leaf)
        raise ForbiddenPathError(
            f"artifact {path!r} is not a plain file inside the workspace", field="path"
        )
    with contextlib.suppress(OSError):
        os.set_blocking(leaf, True)
    # mimetypes reads system files on first use: keep that here, off the event loop
    media_type = mimetypes.guess_type(parts[-1])[0] or "application/octet-stream"
    return OpenArtifact(leaf, st, media_type)
