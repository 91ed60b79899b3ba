"""The uploads of one server's data directory, stored once by content.

An upload's id is the sha256 of its bytes: the same bytes sent twice are kept once. A body is
streamed to `uploads/.incoming` (services/uploads/incoming.py) and only a complete one is
renamed into place, read-only, with its metadata beside it: a connection that drops, a body
over a cap, a full disk leave nothing visible.

References: a run that names an upload holds a marker `uploads/.refs/ID/RUN_ID`, made before the
run is stored. An upload with markers of live runs is kept; one without expires `upload_ttl_s`
after it was last uploaded or released (services/uploads/expiry.py). Keeping, referencing and
expiring take one lock, so an upload cannot expire between a submit's check and its marker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import stat
import threading
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import IO

import structlog

from runyard.errors import (
    InvalidInputError,
    NotFoundError,
    StorageFullError,
)
from runyard.regular_files import read_regular
from runyard.services.artifacts import OpenArtifact
from runyard.services.uploads.incoming import (
    Incoming,
    UploadTooLargeError,
    keep_free,
    storage_error,
)
from runyard.services.uploads.names import UPLOAD_ID, safe_name
from runyard.services.uploads.record import Upload, read_upload
from runyard.services.uploads.sniff import HEAD

log = structlog.get_logger(__name__)


class UploadQuotaError(StorageFullError):
    title, slug = "Upload quota reached", "upload-quota"


class Uploads:
    def __init__(
        self, data_dir: Path, max_bytes: int, quota_bytes: int | None = None, *,
        fsync: bool = False, min_free_bytes: int = 0,
    ) -> None:  # fmt: skip
        self.min_free_bytes = min_free_bytes  # left free on the disk by every upload
        self.root = data_dir / "uploads"
        self.incoming = self.root / ".incoming"
        self.refs = self.root / ".refs"
        self.max_bytes = max_bytes  # one upload
        self.quota_bytes = quota_bytes  # all of them together
        self.stored_bytes = 0  # counted at start (prepare), kept up to date
        self.fsync = fsync  # as the database does: blobs, metadata and markers reach the disk
        self.receiving_bytes = 0  # of uploads being received now (bounded by the quota too)
        self._lock = threading.Lock()
        self._receiving: set[str] = set()  # temporary files being written now
        # uploads a request created and may take back (multipart_submit), with the metadata's
        # mtime when created: taken back only if nobody uploaded or used them since
        self._fresh: dict[str, int] = {}

    def blob(self, upload_id: str) -> Path:
        return self.root / upload_id

    def _meta(self, upload_id: str) -> Path:
        return self.root / f"{upload_id}.json"

    # -- receiving ---------------------------------------------------------------------------

    def prepare(self) -> None:
        """Blocking, at start: the folders, what is stored counted, and the leftovers of
        uploads cut by a crash removed (no upload is being received yet)."""
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.refs.mkdir(exist_ok=True)
        self.remove_leftovers()
        self.stored_bytes = sum(u.size for u in self.all())

    def remove_leftovers(self) -> int:
        """Blocking: temporary files no upload in progress writes, and metadata whose blob
        is gone (a crash between the two, or a removal cut short)."""
        removed = 0
        with self._lock:  # keeping writes its metadata's temporary file under the lock
            # an entry that cannot be removed (a directory put there) is left, and the rest
            # still is: one such stopped every sweep, and no upload expired again (a probe)
            for entry in self.incoming.iterdir():
                if entry.name not in self._receiving:
                    with contextlib.suppress(OSError):
                        entry.unlink()
                        removed += 1
            for meta in self.root.glob("*.json"):
                if UPLOAD_ID.fullmatch(meta.stem) and not self.blob(meta.stem).exists():
                    with contextlib.suppress(OSError):
                        meta.unlink(missing_ok=True)
                        removed += 1
        return removed

    def check_room(self, size: int, stored: int = 0) -> None:
        """An upload grown to `size` bytes still fits its cap and the quota with `stored`
        bytes besides it (while it streams: the other uploads being received, so they never
        hold more than the quota between them; when it is kept: what is stored — the same
        bytes stored already need no room, which only the hash tells)."""
        if size > self.max_bytes:
            raise UploadTooLargeError(
                f"the upload is over the limit of {self.max_bytes // 2**20} MiB "
                "(max_upload_mb)", limit_bytes=self.max_bytes,
            )  # fmt: skip
        if self.quota_bytes is not None and stored + size > self.quota_bytes:
            raise UploadQuotaError(
                f"the server's uploads would be over their quota of "
                f"{self.quota_bytes // 2**20} MiB (max_uploads_mb); uploads nobody uses expire "
                "after upload_ttl_s", limit_bytes=self.quota_bytes,
            )  # fmt: skip

    async def open(self, expected: int = 0) -> Incoming:
        """A new upload's file; `expected`: the bytes it announces, refused at once (507)
        if they would leave the disk under min_free_mb, before any is read."""
        tmp = self.incoming / secrets.token_hex(8)
        self._receiving.add(tmp.name)
        try:
            fh = await asyncio.to_thread(_create, tmp, expected, self.min_free_bytes)
        except OSError as exc:
            self._receiving.discard(tmp.name)
            raise storage_error(exc) from exc
        except BaseException:
            self._receiving.discard(tmp.name)
            raise
        return Incoming(self, tmp, fh)

    def forget(self, tmp: Path) -> None:
        self._receiving.discard(tmp.name)

    async def keep(
        self, incoming: Incoming, name: str, *, fresh: bool = False
    ) -> tuple[Upload, bool]:
        """The received file stored (or, when the same bytes are stored, the upload as first
        kept); whether it is new. The temporary file is gone either way. `fresh`: the caller
        may take a new upload back (`take_back`) while nobody else has used it."""
        try:
            await incoming.close()
            upload = Upload(
                incoming.digest.hexdigest(), incoming.size, safe_name(name), name[:1024],
                time.time(),
            )  # fmt: skip
            return await asyncio.to_thread(self._keep, incoming.tmp, upload, fresh)
        except OSError as exc:
            raise storage_error(exc) from exc
        finally:
            await incoming.discard()

    async def receive(
        self, chunks: AsyncIterator[bytes], name: str, expected: int = 0
    ) -> tuple[Upload, bool]:
        """Store a streamed body (`expected`: the size it announces); the upload and whether
        it is new. Raises UploadTooLargeError, UploadQuotaError, StorageFullError,
        StorageIOError."""
        incoming = await self.open(expected)
        try:
            async for chunk in chunks:
                await incoming.write(chunk)
        except OSError as exc:
            await incoming.discard()
            raise storage_error(exc) from exc
        except BaseException:
            await incoming.discard()
            raise
        return await self.keep(incoming, name)

    def _keep(self, tmp: Path, upload: Upload, fresh: bool) -> tuple[Upload, bool]:
        with self._lock:  # the same bytes sent at once by two clients: one is kept
            kept = self._read_meta(upload.id)
            if kept is not None:
                self._meta(upload.id).touch()  # uploaded again: its expiry starts again
                self._fresh.pop(upload.id, None)  # and whoever made it may not take it back
                return kept, False
            self.check_room(upload.size, self.stored_bytes)
            tmp.chmod(0o444)
            meta = self._meta(upload.id)
            meta_tmp = self.incoming / f"{upload.id}.{secrets.token_hex(4)}.json.tmp"
            meta_tmp.write_text(json.dumps(asdict(upload)))
            if self.fsync:
                _fsync(tmp)
                _fsync(meta_tmp)
            # metadata first, the blob last: an upload exists once its blob does, and a
            # failure in between leaves metadata without a blob, which is not an upload
            # (and is removed with the leftovers)
            meta_tmp.replace(meta)
            try:
                _clear_the_way(self.blob(upload.id))
                tmp.replace(self.blob(upload.id))
            except OSError:
                meta.unlink(missing_ok=True)
                raise
            if self.fsync:
                _fsync_dir(self.root)
            self.stored_bytes += upload.size
            if fresh:
                self._fresh[upload.id] = meta.stat().st_mtime_ns
            return upload, True

    def take_back(self, upload_id: str) -> bool:
        """Blocking: remove an upload kept `fresh` by a request that failed, unless somebody
        uploaded the same bytes or a run used it since; whether it was removed."""
        with self._lock:
            stamp = self._fresh.pop(upload_id, None)
            try:
                untouched = stamp == self._meta(upload_id).stat().st_mtime_ns
            except FileNotFoundError:
                return False
            if not untouched or self.markers(upload_id):
                return False
            return self._remove(upload_id)

    def settle(self, upload_ids: Iterable[str]) -> None:
        """The request that kept these succeeded: they are no longer its to take back."""
        for upload_id in upload_ids:
            self._fresh.pop(upload_id, None)

    # -- reading -----------------------------------------------------------------------------

    async def get(self, upload_id: str) -> Upload:
        """NotFoundError for an id that is not a stored upload (or not an id at all)."""
        if not UPLOAD_ID.fullmatch(upload_id):
            raise NotFoundError(f"no upload {upload_id[:80]!r}: an upload id is a sha256 (hex)")
        found = await asyncio.to_thread(self._read_meta, upload_id)
        if found is None:
            raise NotFoundError(f"no upload {upload_id}")
        return found

    def open_blob(self, upload_id: str) -> OpenArtifact:
        """Blocking: the upload opened for reading (the caller closes it). Served as bytes,
        never as what its name suggests: a client's file is not the server's page."""
        fd = os.open(self.blob(upload_id), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        return OpenArtifact(fd, os.fstat(fd), "application/octet-stream")

    def head(self, upload_id: str) -> bytes:
        """Blocking: the first bytes of an upload, to sniff what it is (FileNotFoundError
        once it is gone; a FIFO or a directory in its place is refused, never waited on)."""
        return read_regular(self.blob(upload_id), HEAD)

    def all(self) -> list[Upload]:
        """Blocking: every stored upload."""
        found = []
        for meta in self.root.glob("*.json"):
            upload = self._read_meta(meta.stem)
            if upload is not None:
                found.append(upload)
        return found

    def _read_meta(self, upload_id: str) -> Upload | None:
        return read_upload(self._meta(upload_id), self.blob(upload_id), upload_id)

    # -- references and expiry ---------------------------------------------------------------

    async def reference(self, users: Mapping[str, list[str]]) -> None:
        """Markers that runs use uploads (upload id -> run ids), made before the runs are
        stored. An upload that expired since it was checked is a 422 naming it."""
        if users:
            try:
                await asyncio.to_thread(self._reference, users)
            except OSError as exc:
                raise storage_error(exc) from exc

    def _reference(self, users: Mapping[str, list[str]]) -> None:
        with self._lock:
            for upload_id, run_ids in users.items():
                if not self.blob(upload_id).is_file():
                    raise InvalidInputError(
                        f"upload {upload_id} expired meanwhile: upload it again", field="params"
                    )
                # still `fresh`: a request that fails takes it back once its run's marker is
                # gone (unreference), never while a run is said to use it (take_back)
                folder = self.refs / upload_id
                folder.mkdir(parents=True, exist_ok=True)
                for run_id in run_ids:
                    (folder / run_id).touch()
                if self.fsync:  # the run is stored next: its marker must outlive a crash
                    _fsync_dir(folder)

    async def unreference(self, users: Mapping[str, list[str]]) -> None:
        """The markers `reference` made, for runs that were not stored after all (the store
        refused them): no upload is said to be used by a run that does not exist."""
        for upload_id, run_ids in users.items():
            await asyncio.to_thread(self._release, [upload_id], run_ids)

    async def release(self, upload_ids: Iterable[str], run_id: str) -> None:
        """The run is gone: its markers go; each upload expires upload_ttl_s from now unless
        another run uses it."""
        ids = list(upload_ids)
        if ids:
            await asyncio.to_thread(self._release, ids, [run_id])

    def _release(self, upload_ids: list[str], run_ids: list[str]) -> None:
        for upload_id in upload_ids:
            for run_id in run_ids:
                with contextlib.suppress(FileNotFoundError):
                    (self.refs / upload_id / run_id).unlink()

    def markers(self, upload_id: str) -> list[tuple[str, float]]:
        """Blocking: (run id, when the marker was made) of each run said to use the upload."""
        found = []
        # a file where its folder goes is no marker of a run (it stopped every sweep)
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for entry in os.scandir(self.refs / upload_id):
                with contextlib.suppress(FileNotFoundError):
                    found.append((entry.name, entry.stat().st_mtime))
        return found

    def last_used(self, upload_id: str) -> float:
        """Blocking: when the upload was last uploaded, or a run stopped using it."""
        times = [0.0]
        for path in (self._meta(upload_id), self.refs / upload_id):
            with contextlib.suppress(FileNotFoundError):
                times.append(path.stat().st_mtime)
        return max(times)

    def expire(self, upload_id: str, before: float) -> bool:
        """Blocking: remove the upload if no run uses it and it was last used before
        `before`; whether it was removed."""
        with self._lock:
            upload = self._read_meta(upload_id)
            if upload is None or self.markers(upload_id) or self.last_used(upload_id) >= before:
                return False
            return self._remove(upload_id)

    def remove_unused(self, upload_id: str) -> bool:
        """Blocking: remove the upload if no run is said to use it (checked under the lock a
        run's reference takes); whether it was removed."""
        with self._lock:
            if self.markers(upload_id):
                return False
            self._fresh.pop(upload_id, None)
            return self._remove(upload_id)

    def _remove(self, upload_id: str) -> bool:
        """Under the lock: the blob first (then it is no upload), its metadata and markers."""
        upload = self._read_meta(upload_id)
        if upload is None:
            return False
        self.blob(upload_id).unlink(missing_ok=True)
        self.stored_bytes = max(0, self.stored_bytes - upload.size)
        self._meta(upload_id).unlink(missing_ok=True)
        refs = self.refs / upload_id
        if refs.is_dir() and not refs.is_symlink():
            shutil.rmtree(refs, ignore_errors=True)
        else:  # a file in its folder's place (no marker of any run)
            with contextlib.suppress(OSError):
                refs.unlink()
        return True


def _fsync(path: Path) -> None:
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create(path: Path, expected: int, min_free: int) -> IO[bytes]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = path.open("xb")
    try:
        keep_free(fh.fileno(), expected, min_free)
    except BaseException:
        fh.close()
        path.unlink(missing_ok=True)
        raise
    return fh


def _clear_the_way(blob: Path) -> None:
    """A directory where an upload's file belongs (put there by hand, or damage) is removed:
    an upload is its file, and the rename onto a directory failed for ever, every upload of
    those bytes a 503 whose retry never helped (a probe). Anything else there is replaced by
    the rename itself."""
    try:
        st = blob.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        log.warning("upload_place_cleared", path=str(blob), was="a directory")
        shutil.rmtree(blob)
