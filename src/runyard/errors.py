"""The one exception hierarchy; the api maps each to RFC 9457 problem JSON in one place."""

from __future__ import annotations

import errno
from collections.abc import Iterable
from typing import Any

# A message about an input stays short whatever the input: pydantic lists every choice of an
# enum it refuses (20,000 choices: a 378 KB problem, its detail and its `errors` each)
MAX_MESSAGE = 500


def field_path(loc: Iterable[Any]) -> str:
    """A validation error's place as the client wrote it (`body.labels.bad key`): pydantic
    adds `[key]` after a mapping's key that is refused, a name of its own (a probe)."""
    return ".".join(str(p) for p in loc if p != "[key]")


def bounded(message: str, limit: int = MAX_MESSAGE) -> str:
    return message if len(message) <= limit else message[: limit - 1] + "…"


class RunyardError(Exception):
    status: int = 500
    title: str = "Internal error"
    slug: str = "internal"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra
        self.headers: dict[str, str] = {}


class NotFoundError(RunyardError):
    status, title, slug = 404, "Not found", "not-found"


class ConflictError(RunyardError):
    status, title, slug = 409, "Conflict", "conflict"


class StaleWriteError(ConflictError):
    """A write from a copy of a record that changed (or went) since it was read."""


class ScheduleLimitError(ConflictError):
    """`max_schedules` stored already (counted by the store: every server's creates)."""

    def __init__(self, at_most: int) -> None:
        super().__init__(
            f"this server holds at most {at_most} schedules (max_schedules): delete one first",
            limit=at_most,
        )


class ServerIdTakenError(ConflictError):
    """A server started under an id whose lease another live process holds."""


class RecordDamagedError(RunyardError):
    """A stored row that cannot be read back as what it records (a column rewritten behind
    the server's back, or damaged in a page that still parses): named, with its column, so
    that one such row is that run's failure alone, not every listing's or the queue's."""

    title, slug = "Damaged record", "record-damaged"

    def __init__(self, run_id: str, column: str, why: str, kind: str = "run") -> None:
        super().__init__(f"the stored record of {kind} {run_id} is damaged ({column}: {why})")
        self.run_id, self.column, self.kind = run_id, column, kind


class InvalidInputError(RunyardError):
    status, title, slug = 422, "Invalid input", "invalid-input"


class ForbiddenPathError(RunyardError):
    status, title, slug = 403, "Path refused", "path-refused"


class QueueFullError(RunyardError):
    status, title, slug = 429, "Queue full", "queue-full"

    def __init__(self, detail: str, retry_after_s: int, retry_after_ms: int | None = None) -> None:
        super().__init__(detail, retry_after=retry_after_s)
        self.headers = {"Retry-After": str(retry_after_s)}
        # finer than Retry-After's whole seconds, for clients that read it (retry-after-ms)
        self.retry_after_ms = retry_after_ms if retry_after_ms is not None else retry_after_s * 1000


class UnavailableError(RunyardError):
    status, title, slug = 503, "Service unavailable", "unavailable"

    def __init__(self, detail: str, retry_after_s: int = 1) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after_s)}


class StoreBusyError(UnavailableError):
    slug = "store-busy"


class StoreUnreachableError(UnavailableError):
    """The database's connection was lost (a restart, a failover, a terminated backend) or
    none could be had: nothing of the request is known to be written, unless it says so."""

    slug = "store-unreachable"


class StorageFullError(RunyardError):
    status, title, slug = 507, "Insufficient storage", "storage-full"


class StorageIOError(UnavailableError):
    """A durable write failed with an I/O error (EIO) or the store's file is not the one opened:
    retrying elsewhere or later may work; nothing was changed."""

    title, slug = "Storage I/O error", "storage-io"


class StoreDamagedError(StorageIOError):
    """The database's pages are damaged (SQLite: malformed, or not a database): no write or
    read that reaches them can succeed until the file is restored or recovered."""


def store_damaged(path: object, exc: BaseException) -> StoreDamagedError:
    return StoreDamagedError(
        f"the database {path} is damaged ({exc}): stop the server, then restore it from a "
        "backup, or move it (with its -wal and -shm files) aside to start with an empty one"
    )


FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# The server's own limits, not the disk's: too many descriptors open (in this process or the
# whole system), or no memory for the kernel's part. Passing, and nothing about the disk.
SHORT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})


class OutOfResourcesError(UnavailableError):
    """A write could not even begin for want of a descriptor or memory: the disk is fine."""

    title, slug = "Out of resources", "out-of-resources"


def storage_error(exc: OSError, what: str) -> RunyardError:
    """The problem for a durable write that failed: 507 when the disk is full, else 503.
    `what` names the write (e.g. "the database"), the detail names the cause."""
    cause = exc.strerror or str(exc)
    if exc.errno in FULL_ERRNOS:
        return StorageFullError(f"{what} cannot be written: {cause}; nothing was changed")
    if exc.errno in SHORT_ERRNOS:
        return short_of_resources(exc, f"{what} cannot be written")
    return StorageIOError(f"{what} cannot be written: {cause}; nothing was changed")


def short_of_resources(exc: OSError, failed: str) -> OutOfResourcesError:
    """`failed` says what could not be done ("the upload could not be stored")."""
    name = errno.errorcode.get(exc.errno or 0, "?")
    return OutOfResourcesError(
        f"{failed}: the server is short of descriptors or memory "
        f"({name}: {exc.strerror or exc}), not of disk; nothing was changed, try again"
    )


def raise_if_servers_fault(exc: OSError, what: str) -> None:
    """An open or a read of `what` ("the log") that failed for the server's own reasons is
    raised as such: out of descriptors or memory (503 out-of-resources), the disk failing
    (503 storage-io). Anything else is the caller's to answer from what the path is (absent,
    a link, not a file): those were answered so, 403, 404 or an empty log, for a file that was
    there, to a client that did nothing wrong."""
    if exc.errno in SHORT_ERRNOS:
        raise short_of_resources(exc, f"{what} could not be opened") from exc
    if exc.errno == errno.EIO:
        raise StorageIOError(f"{what} could not be read: {exc.strerror}") from exc
