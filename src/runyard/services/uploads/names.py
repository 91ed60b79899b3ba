"""File names as the client gave them, made safe to stage: a plain name, never a path."""

from __future__ import annotations

import re
import unicodedata

UPLOAD_ID = re.compile(r"^[0-9a-f]{64}$")  # an upload's id: the sha256 of its bytes, hex
MAX_NAME = 255  # bytes: what a filesystem allows in one name


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
