"""The data directory's own entries and the kind each must be. A directory where the database
or the supervisor's socket, lock or log belongs, or a file where the runs or the uploads are
kept, breaks whatever uses it next: checked before the server starts (cli/data_entries.py),
and for the directories it makes again when they are missing, at each readiness check too
(services/health.py), since a file can take their place while it runs."""

from __future__ import annotations

import os
import re
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
# what this writes (hex), or a name an operator put there; anything else (empty) is damage
INSTANCE_ID = re.compile(r"[!-~]{1,64}")  # printable ASCII, no space
INSTANCE_READ_MAX = 256


def directories(data_dir: Path) -> Expected:
    """The directories the server makes when they are missing, at start or while it runs."""
    return {
        data_dir / "runs": ((DIRECTORY,), "the runs' directories"),
        # a file there failed every delete (503, for ever) and stopped retention for good
        data_dir / "runs" / ".deleting": ((DIRECTORY,), "the runs being deleted"),
        data_dir / "uploads": ((DIRECTORY,), "the uploaded files"),
        # a file there failed every upload (or every run of a file param) with a 503, for ever
        data_dir / "uploads" / ".incoming": ((DIRECTORY,), "the uploads being received"),
        data_dir / "uploads" / ".refs": ((DIRECTORY,), "which runs use which upload"),
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
    container made anew), and another data directory does not have.

    Written whole or not at all (a temporary file, synced, then linked to its name: a crash
    or a full disk midway leaves no empty id behind, which every such server would share).
    One found that is not an id (empty, cut, damaged) never named a member: replaced."""
    path = data_dir / INSTANCE_FILE
    found = _instance_in(path)
    if found is not None:
        return found
    made = secrets.token_hex(16)
    tmp = data_dir / f".{INSTANCE_FILE}.{made}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        try:
            os.write(fd, made.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            path.hardlink_to(tmp)  # only if none is there: two starts at once keep one id
        except FileExistsError:
            found = _instance_in(path)  # another start's, made meanwhile
            if found is not None:
                return found
            tmp.replace(path)  # not an id: ours takes its place
        except OSError:  # a file system without hard links (EPERM): a rename, as whole
            tmp.replace(path)
        dir_fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)
    return made


def _instance_in(path: Path) -> str | None:
    try:
        with path.open("rb") as f:
            text = f.read(INSTANCE_READ_MAX).decode("ascii", errors="replace").strip()
    except FileNotFoundError:
        return None
    return text if INSTANCE_ID.fullmatch(text) else None
