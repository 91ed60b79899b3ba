"""Uploads: files sent ahead of the runs that use them (issue 18, first part), stored once by
content. An upload's id is the sha256 of its bytes: the same bytes sent twice are kept once.

A body is streamed to a temporary file in `DATA_DIR/uploads/.incoming`, written and hashed in a
worker thread chunk by chunk (never held whole in memory, never hashed on the event loop), and
capped while it streams: past `max_upload_mb` it is refused and the temporary file removed.
Only a complete upload is renamed into place (read-only), with its metadata beside it; a
connection that drops, a body over the cap, a full disk leave nothing visible behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import secrets
import threading
import time
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from runyard import failpoints
from runyard.errors import (
    FULL_ERRNOS,
    InvalidInputError,
    NotFoundError,
    RunyardError,
    StorageFullError,
    StorageIOError,
)
from runyard.jobs.spec import JobSpec

UPLOAD_ID = re.compile(r"^[0-9a-f]{64}$")
MAX_NAME = 255
# bytes written per thread hand-off: large enough that the hop costs nothing per byte
FLUSH_BYTES = 1024 * 1024


class UploadTooLargeError(RunyardError):
    status, title, slug = 413, "Payload too large", "upload-too-large"


@dataclass(frozen=True, slots=True)
class Upload:
    id: str  # sha256 of the bytes, hex
    size: int
    name: str  # sanitised: a plain file name, safe to stage as it is
    original_name: str  # as the client sent it (metadata only, never a path)
    created_at: float


def safe_name(name: str) -> str:
    """A plain file name from whatever the client said: no directories, separators, NUL or
    control characters, no leading dots; `upload` when nothing is left."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    kept = "".join(
        ch for ch in unicodedata.normalize("NFC", base)
        if unicodedata.category(ch)[0] != "C" and ch not in '<>:"|?*'
    ).strip().lstrip(".")  # fmt: skip
    if len(kept.encode()) > MAX_NAME:  # the filesystem counts bytes: cut them, keep the suffix
        stem, dot, suffix = kept.rpartition(".")
        ext = f".{suffix}" if dot and stem and len(suffix.encode()) <= 16 else ""
        room = MAX_NAME - len(ext.encode())
        kept = (stem if ext else kept).encode()[:room].decode("utf-8", "ignore") + ext
    return kept or "upload"


class Uploads:
    """The uploads of one server's data directory."""

    def __init__(self, data_dir: Path, max_bytes: int) -> None:
        self.root = data_dir / "uploads"
        self.incoming = self.root / ".incoming"
        self.max_bytes = max_bytes
        self._keeping = threading.Lock()  # one upload of given bytes becomes the stored one

    def blob(self, upload_id: str) -> Path:
        return self.root / upload_id

    async def receive(self, chunks: AsyncIterator[bytes], name: str) -> tuple[Upload, bool]:
        """Store a streamed body; the upload and whether it is new (False: the same bytes
        were already here). Raises UploadTooLargeError, StorageFullError, StorageIOError."""
        await asyncio.to_thread(self.incoming.mkdir, parents=True, exist_ok=True)
        tmp = self.incoming / secrets.token_hex(8)
        digest = hashlib.sha256()
        size = 0
        try:
            fh = await asyncio.to_thread(tmp.open, "xb")
            try:
                pending: list[bytes] = []
                held = 0
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise UploadTooLargeError(
                            f"the upload is over the limit of {self.max_bytes // 2**20} MiB "
                            "(max_upload_mb)", limit_bytes=self.max_bytes,
                        )  # fmt: skip
                    pending.append(chunk)
                    held += len(chunk)
                    if held >= FLUSH_BYTES:
                        await asyncio.to_thread(_write, fh, digest, pending)
                        pending, held = [], 0
                await asyncio.to_thread(_write, fh, digest, pending)
            finally:
                await asyncio.to_thread(fh.close)
            upload = Upload(digest.hexdigest(), size, safe_name(name), name[:1024], time.time())
            upload, new = await asyncio.to_thread(self._keep, tmp, upload)
        except OSError as exc:
            raise _storage_error(exc) from exc
        finally:
            await asyncio.to_thread(_remove, tmp)
        return upload, new

    def _keep(self, tmp: Path, upload: Upload) -> tuple[Upload, bool]:
        """Blocking: the complete file into place (read-only), its metadata beside it; or,
        when the same bytes are stored already, the first upload as it was kept."""
        with self._keeping:  # the same bytes sent at once by two clients: one is kept
            return self._keep_alone(tmp, upload)

    def _keep_alone(self, tmp: Path, upload: Upload) -> tuple[Upload, bool]:
        blob = self.blob(upload.id)
        meta = self.root / f"{upload.id}.json"
        kept = self._read_meta(upload.id)
        if kept is not None:
            return kept, False  # stored once: the first upload's metadata stands
        tmp.chmod(0o444)
        tmp.replace(blob)
        meta_tmp = self.incoming / f"{upload.id}.{secrets.token_hex(4)}.json.tmp"
        meta_tmp.write_text(json.dumps(asdict(upload)))
        meta_tmp.replace(meta)
        return upload, True

    async def get(self, upload_id: str) -> Upload:
        """NotFoundError for an id that is not a stored upload (or not an id at all)."""
        if not UPLOAD_ID.fullmatch(upload_id):
            raise NotFoundError(f"no upload {upload_id[:80]!r}: an upload id is a sha256 (hex)")
        found = await asyncio.to_thread(self._read_meta, upload_id)
        if found is None:
            raise NotFoundError(f"no upload {upload_id}")
        return found

    def _read_meta(self, upload_id: str) -> Upload | None:
        try:
            data = json.loads((self.root / f"{upload_id}.json").read_text())
            upload = Upload(**data)
        except (OSError, ValueError, TypeError):
            return None
        if upload.id != upload_id or not self.blob(upload_id).is_file():
            return None
        return upload


async def check_files(
    uploads: Uploads, spec: JobSpec, values: dict[str, Any], seen: dict[str, Upload]
) -> None:
    """Each file param names a stored upload within its limits (422 or 413 naming the param
    and the limit). `seen`: uploads already read (a batch shares one upload among runs)."""
    for name, decl in spec.params.items():
        if decl.type != "file" or name not in values:
            continue
        field = f"params.{name}"
        upload_id = str(values[name])[len("upload:") :]
        upload = seen.get(upload_id)
        if upload is None:
            try:
                upload = seen[upload_id] = await uploads.get(upload_id)
            except NotFoundError:
                raise InvalidInputError(
                    f"param {name!r}: no upload {upload_id} (PUT /v1/uploads first)", field=field
                ) from None
        if decl.max_mb is not None and upload.size > decl.max_mb * 2**20:
            raise UploadTooLargeError(
                f"param {name!r}: the file is {upload.size} bytes, over its max_mb "
                f"({decl.max_mb:g})", field=field,
            )  # fmt: skip
        accept = tuple(ext.lower() for ext in decl.accept or ())
        if accept and not upload.name.lower().endswith(accept):
            raise InvalidInputError(
                f"param {name!r}: {upload.name!r} is not a {', '.join(accept)} file", field=field
            )


def _write(fh: IO[bytes], digest: hashlib._Hash, chunks: list[bytes]) -> None:
    """Blocking: chunks to the file and into the hash (both off the event loop)."""
    failpoints.check("upload")
    for chunk in chunks:
        fh.write(chunk)
        digest.update(chunk)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _storage_error(exc: OSError) -> RunyardError:
    if exc.errno in FULL_ERRNOS:
        return StorageFullError(f"the upload could not be stored: {exc.strerror or exc}")
    return StorageIOError(f"the upload could not be stored: {exc.strerror or exc}")
