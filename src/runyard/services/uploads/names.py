"""File names as the client gave them, made safe to stage: a plain name, never a path."""

from __future__ import annotations

import re
import unicodedata

UPLOAD_ID = re.compile(r"^[0-9a-f]{64}$")  # an upload's id: the sha256 of its bytes, hex
MAX_NAME = 255  # bytes: what a filesystem allows in one name


def safe_name(name: str) -> str:
    """A plain file name from whatever the client said: no directories, separators, NUL or
    control characters, no leading dots, no space at either end; `upload` when nothing is
    left. Its own result is kept as it is, so a run can name its file by it (`upload:ID/NAME`,
    upload_refs.py): trimmed until nothing changes (`. x.csv` lost its dot, then kept the
    space behind it), and again after a cut (one may end on a space), a probe."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    kept = _trimmed("".join(
        ch for ch in unicodedata.normalize("NFC", base)
        if unicodedata.category(ch)[0] != "C" and ch not in '<>:"|?*'
    ))  # fmt: skip
    if len(kept.encode()) > MAX_NAME:  # the filesystem counts bytes: cut them, keep the suffix
        stem, dot, suffix = kept.rpartition(".")
        ext = f".{suffix}" if dot and stem and len(suffix.encode()) <= 16 else ""
        room = MAX_NAME - len(ext.encode())
        cut = (stem if ext else kept).encode()[:room].decode("utf-8", "ignore")
        kept = _trimmed(cut.rstrip() + ext)
    return kept or "upload"


def _trimmed(name: str) -> str:
    while (trimmed := name.strip().lstrip(".")) != name:
        name = trimmed
    return name
