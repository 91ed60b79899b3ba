"""What the first bytes of a file say it is, where that is cheap to tell: a declared `accept`
is checked against the content, never against the client's name alone.

Only kinds with a signature (or a plain-text rule) are checked; an extension not listed here
is taken on its name.
"""

from __future__ import annotations

HEAD = 8192  # bytes read from the start of a file to sniff it

_MAGIC: dict[str, tuple[bytes, ...]] = {
    ".zip": (b"PK\x03\x04", b"PK\x05\x06"),
    ".gz": (b"\x1f\x8b",),
    ".tgz": (b"\x1f\x8b",),
    ".bz2": (b"BZh",),
    ".xz": (b"\xfd7zXZ\x00",),
    ".zst": (b"\x28\xb5\x2f\xfd",),
    ".pdf": (b"%PDF-",),
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
    ".gif": (b"GIF87a", b"GIF89a"),
    ".h5": (b"\x89HDF\r\n\x1a\n",),
    ".hdf5": (b"\x89HDF\r\n\x1a\n",),
    ".nc": (b"CDF\x01", b"CDF\x02", b"\x89HDF\r\n\x1a\n"),
    ".npy": (b"\x93NUMPY",),
    ".parquet": (b"PAR1",),
    ".sqlite": (b"SQLite format 3\x00",),
    ".step": (b"ISO-10303-21;",),
    ".stp": (b"ISO-10303-21;",),
}
# text formats: UTF-8 without NUL bytes in the head
_TEXT = frozenset({
    ".csv", ".tsv", ".txt", ".json", ".jsonl", ".ndjson", ".yaml", ".yml", ".toml", ".xml",
    ".ini", ".cfg", ".md", ".obj", ".inp", ".dat", ".msh", ".geo", ".py", ".sh", ".patch",
    ".diff", ".svg",
})  # fmt: skip


def is_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # a character cut by the end of the head
    return True


def content_matches(ext: str, head: bytes) -> bool:
    """Whether a file starting with `head` can be a `ext` file (True where not checkable)."""
    ext = ext.lower()
    if ext in _MAGIC:
        return head.startswith(_MAGIC[ext])
    if ext == ".stl":  # ASCII ("solid") or binary (80-byte header, then a count)
        return head.lstrip().startswith(b"solid") or len(head) >= 84
    if ext in _TEXT:
        return is_text(head)
    return True
