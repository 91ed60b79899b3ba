"""Per-run workspaces: empty, a copy of a directory, or a cheap local git clone.

Everything here blocks (copies, git); the executor calls it from a worker thread.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
from pathlib import Path

from runyard import failpoints
from runyard.jobs.workspace_source import split_source


class WorkspaceError(Exception):
    pass


def resolve_source(spec: str, jobs_dir: Path) -> tuple[str, Path, str | None]:
    """Split `copy:DIR` / `git:REPO[@REF]` into (kind, absolute source, ref)."""
    try:
        kind, rest, ref = split_source(spec)
    except ValueError as exc:  # a job loaded by an older version may hold one
        raise WorkspaceError(str(exc)) from None
    return kind, (jobs_dir / rest).resolve(), ref


def prepare(spec: str, jobs_dir: Path, target: Path) -> None:
    """Create `target` (which must not exist yet) from the job's workspace spec."""
    failpoints.check("workspace")
    if spec == "empty":
        target.mkdir(parents=True)
        return
    kind, source, ref = resolve_source(spec, jobs_dir)
    if kind == "copy":
        if not source.is_dir():
            raise WorkspaceError(f"workspace source {source} is not a directory")
        _copy_tree(source, target)
        return
    _git_clone(source, target, ref)


def _copy_tree(source: Path, target: Path) -> None:
    """A copy, or nothing: a partial one is removed (a later attempt would run in it). A file
    that could not be copied fails it with that file's own OSError, not shutil's summary of
    them (whose errno is none: a full disk would read as the run's fault)."""
    failed: list[OSError] = []

    def copy(src: str, dst: str) -> object:
        try:
            return _copy_file(src, dst)
        except OSError as exc:
            failed.append(exc)
            raise

    try:
        # symlinks are copied as links, never followed, so a copy pulls in nothing from outside
        shutil.copytree(source, target, symlinks=True, copy_function=copy)
    except BaseException as exc:
        shutil.rmtree(target, ignore_errors=True)
        if isinstance(exc, shutil.Error) and failed:
            raise failed[0] from exc
        raise


def _copy_file(src: str, dst: str) -> str:
    """shutil.copy2 for a regular file alone, read from the descriptor it was checked on. A
    device copied as a file was read for ever (a probe: `/dev/zero` in the source filled the
    disk at 350 MB/s, and neither a cancel nor a shutdown stopped the copy); a FIFO waited for
    a writer. Anything but a file, a directory or a link fails the copy, naming it."""
    _regular(src, os.lstat(src).st_mode)  # before opening: opening a device may act on it
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        _regular(src, os.fstat(fd).st_mode)  # what was opened, if it was swapped meanwhile
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            _copy_bytes(fd, out)
        finally:
            os.close(out)
    finally:
        os.close(fd)
    shutil.copystat(src, dst, follow_symlinks=False)
    return dst


def _copy_bytes(source: int, target: int) -> None:
    """sendfile, or read and write where the file system takes no sendfile (as shutil falls
    back: an error before the first byte that is not the disk's)."""
    offset = 0
    try:
        while sent := os.sendfile(target, source, offset, 1 << 30):
            offset += sent
    except OSError as exc:
        if offset or exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
            raise
    else:
        return
    while chunk := os.read(source, 1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(target, view) :]


def _regular(src: str, mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise WorkspaceError(
            f"workspace source holds {src!r}, {_kind(mode)}: only files, directories and "
            "symbolic links are copied"
        )


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))  # fmt: skip
    return next((name for test, name in kinds if test(mode)), "not a regular file")


# What git says when the disk refuses it: strerror's words, kept as the errno they stand for
_GIT_SHORTAGES = (
    (errno.ENOSPC, "No space left on device"),
    (errno.EDQUOT, "Disk quota exceeded"),
    (errno.EIO, "Input/output error"),
)


def _git_clone(source: Path, target: Path, ref: str | None) -> None:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "GIT_TERMINAL_PROMPT": "0", "HOME": "/"}
    # A local clone hardlinks the object store: cheap, and no working tree is ever shared.
    steps = [
        ["git", "clone", "--quiet", "--no-checkout", "--", str(source), str(target)],
        ["git", "-C", str(target), "checkout", "--quiet", "--detach", ref or "HEAD", "--"],
    ]
    for argv in steps:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            why = f"{' '.join(argv[:2])} failed: {proc.stderr.strip()[:500]}"
            for code, words in _GIT_SHORTAGES:  # git's messages (C locale: no LANG given)
                if words in proc.stderr:
                    raise OSError(code, why)
            raise WorkspaceError(why)
