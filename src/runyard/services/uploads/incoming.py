"""One upload being received: written and hashed chunk by chunk in worker threads, capped as
it streams, invisible until it is kept (services/uploads/store.py)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from pathlib import Path
from typing import IO, TYPE_CHECKING

from runyard import failpoints
from runyard.errors import (
    FULL_ERRNOS,
    SHORT_ERRNOS,
    RunyardError,
    StorageFullError,
    StorageIOError,
    short_of_resources,
)

if TYPE_CHECKING:
    from runyard.services.uploads.store import Uploads

# bytes written per thread hand-off: large enough that the hop costs nothing per byte
FLUSH_BYTES = 1024 * 1024


class UploadTooLargeError(RunyardError):
    status, title, slug = 413, "Payload too large", "upload-too-large"


class Incoming:
    """Bytes of one upload on their way to disk. `write` them, then `finish` (or `discard`,
    which is always safe to call and leaves nothing)."""

    def __init__(self, uploads: Uploads, tmp: Path, fh: IO[bytes]) -> None:
        self.uploads = uploads
        self.tmp = tmp
        self._fh: IO[bytes] | None = fh
        self.digest = hashlib.sha256()
        self.size = 0
        self._pending: list[bytes] = []
        self._held = 0

    async def write(self, chunk: bytes) -> None:
        self.uploads.check_room(self.size + len(chunk), self.uploads.receiving_bytes - self.size)
        self.size += len(chunk)
        self.uploads.receiving_bytes += len(chunk)
        self._pending.append(chunk)
        self._held += len(chunk)
        if self._held >= FLUSH_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        pending, self._pending, self._held = self._pending, [], 0
        if self._fh is not None and pending:
            try:
                await asyncio.to_thread(
                    _write, self._fh, self.digest, pending, self.uploads.min_free_bytes
                )
            except OSError as exc:  # answered as the disk's trouble (507, 503), by any caller
                raise storage_error(exc) from exc

    async def close(self) -> None:
        """Everything written and the file closed: ready to be kept."""
        if self._fh is not None:
            try:
                await self._flush()
            finally:
                fh, self._fh = self._fh, None
                await asyncio.to_thread(fh.close)

    async def discard(self) -> None:
        """Always safe, also twice: the temporary file and what it counted, given back."""
        if self._fh is not None:
            fh, self._fh = self._fh, None
            await asyncio.to_thread(fh.close)
        self.uploads.receiving_bytes -= self.size
        self.size = 0
        await asyncio.to_thread(_remove, self.tmp)
        self.uploads.forget(self.tmp)


def _write(fh: IO[bytes], digest: hashlib._Hash, chunks: list[bytes], min_free: int) -> None:
    """Blocking: chunks to the file and into the hash (both off the event loop), as long as
    they leave `min_free` bytes free on its disk."""
    failpoints.check("upload")
    keep_free(fh.fileno(), sum(map(len, chunks)), min_free)
    for chunk in chunks:
        fh.write(chunk)
        digest.update(chunk)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def keep_free(fd: int, more: int, min_free: int) -> None:
    """Blocking: StorageFullError if `more` bytes written to `fd`'s disk would leave it under
    `min_free` (min_free_mb). That reserve is what lets runs end while the disk is nearly full
    (their exit files, the store): one upload took it whole, and the ends of the runs going
    on could not be written, nor the server's lease renewed."""
    if min_free <= 0:
        return
    st = os.fstatvfs(fd)
    free = st.f_bavail * st.f_frsize
    if free - more < min_free:
        raise StorageFullError(
            f"the upload would leave the data directory under min_free_mb "
            f"({min_free // 2**20} MiB; {free // 2**20} MiB are free): it is refused, and "
            "nothing of it is kept", free_bytes=free,
        )  # fmt: skip


def storage_error(exc: OSError) -> RunyardError:
    if exc.errno in FULL_ERRNOS:
        return StorageFullError(f"the upload could not be stored: {exc.strerror or exc}")
    if exc.errno in SHORT_ERRNOS:
        return short_of_resources(exc, "the upload could not be stored")
    return StorageIOError(f"the upload could not be stored: {exc.strerror or exc}")
