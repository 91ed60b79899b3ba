"""An upload's record: its metadata file beside its bytes, read back as the server wrote it or
not at all (store.py keeps both)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from runyard.regular_files import read_json_object

META_MAX = 64 * 1024  # an upload's metadata file: a few hundred bytes as the server writes it


@dataclass(frozen=True, slots=True)
class Upload:
    id: str  # sha256 of the bytes, hex
    size: int
    name: str  # sanitised: a plain file name, safe to stage as it is
    original_name: str  # as the client sent it (metadata only, never a path)
    created_at: float


def read_upload(meta: Path, blob: Path, upload_id: str) -> Upload | None:
    """Blocking: the upload `meta` records, or None (as if there were none) when it is not a
    regular file of the server's making or its bytes are gone (a probe: a FIFO put there hung
    the start, or held a thread of the pool per request until none was left; a `size` of
    text, or JSON nested past the reader, stopped the start)."""
    try:
        upload = Upload(**read_json_object(meta, META_MAX))
    except (OSError, ValueError, TypeError):
        return None
    if not _sound(upload) or upload.id != upload_id or not blob.is_file():
        return None
    return upload


def _sound(u: Upload) -> bool:
    return (
        type(u.id) is str and type(u.size) is int and u.size >= 0 and type(u.name) is str
        and type(u.original_name) is str and type(u.created_at) in (int, float)
        and math.isfinite(u.created_at)
    )  # fmt: skip
