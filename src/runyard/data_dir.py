"""The data directory's own entries and the kind each must be. A directory where the database
or the supervisor's socket, lock or log belongs, or a file where the runs or the uploads are
kept, breaks whatever uses it next: checked before the server starts (cli/data_entries.py),
and for the directories it makes again when they are missing, at each readiness check too
(services/health.py), since a file can take their place while it runs."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from runyard.execution.protocol import LOCK_NAME, LOG_NAME, SOCKET_NAME

REGULAR, DIRECTORY, SOCKET = stat.S_IFREG, stat.S_IFDIR, stat.S_IFSOCK
_KINDS = {
    stat.S_IFREG: "a regular file",
    stat.S_IFDIR: "a directory",
    stat.S_IFSOCK: "a socket",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFLNK: "a symbolic link",
}
Expected = dict[Path, tuple[tuple[int, ...], str]]  # path -> (the kinds it may be, its use)


INSTANCE_FILE = "instance-id"


def directories(data_dir: Path) -> Expected:
    """The directories the server makes when they are missing, at start or while it runs."""
    return {
        data_dir / "runs": ((DIRECTORY,), "the runs' directories"),
        data_dir / "uploads": ((DIRECTORY,), "the uploaded files"),
    }


def expected(data_dir: Path, database: Path | None) -> Expected:
    """Every entry: the kinds it may be, and what runyard keeps there."""
    found: Expected = {
        **directories(data_dir),
        # a regular file: a socket left by a supervisor that died, removed when one starts
        data_dir / SOCKET_NAME: ((SOCKET, REGULAR), "the supervisor's socket"),
        data_dir / LOCK_NAME: ((REGULAR,), "the supervisor's lock"),
        data_dir / LOG_NAME: ((REGULAR,), "the supervisor's log"),
        data_dir / INSTANCE_FILE: ((REGULAR,), "this server's instance id in a cluster"),
    }
    if database is not None:
        for suffix in ("", "-wal", "-shm"):
            path = database.with_name(database.name + suffix)
            found[path] = ((REGULAR,), "the database")
    return found


def wrong_kind(entries: Expected, remedy: str) -> str | None:
    """Blocking: why one of `entries` cannot be used (absent is fine: made when needed), the
    path, what is there and `remedy` said; or None."""
    for path, (kinds, purpose) in entries.items():
        try:
            kind = stat.S_IFMT(path.stat().st_mode)
        except FileNotFoundError:
            if path.is_symlink():
                return f"{path} is a symbolic link to nothing, where runyard keeps {purpose}"
            continue
        except OSError as exc:
            return f"{path} cannot be examined ({exc.strerror}); runyard keeps {purpose} there"
        if kind not in kinds:
            what = _KINDS.get(kind, "something else")
            return f"{path} is {what}, where runyard keeps {purpose}: {remedy}"
    return None


def instance_of(data_dir: Path) -> str:
    """Which process a server is, as its cluster sees it: the id its data directory keeps
    (made at its first start), which a restart keeps whatever its host is called now (a
    container made anew), and another data directory does not have."""
    path = data_dir / INSTANCE_FILE
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, secrets.token_hex(16).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    text = path.read_text(encoding="ascii", errors="replace").strip()
    return text[:64] or "unknown"
