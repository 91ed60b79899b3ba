"""A write-ahead log that SQLite would drop without a word: its header damaged, while the frames
after it hold pages the database file does not.

SQLite reads a WAL whose header fails its checksum as empty, and the first write then starts a
new one over it: every transaction not yet copied into the database file was gone (a probe:
on a small store, all of them — the WAL holds everything until a thousand pages), and the
server started ready with an empty store. A header torn while SQLite restarted its WAL, after
a checkpoint had copied every frame into the database, is the same to SQLite and harmless.
The two are told apart by the pages themselves: the last committed version of each page in
the log, against the database file's. Read only when the header fails (the WAL's format:
sqlite.org/fileformat2.html#walformat).

A frame damaged after a sound header (a byte flipped on disk) is as silent: SQLite reads the
log up to the first frame that fails its checksum, and every transaction committed after it is
gone (a probe: one byte in frame 1 of 399, and all 40 runs accepted since the checkpoint were
404s, the server ready). Each frame's checksum chains from the one before, and each frame
stores its own: a frame is checked against its predecessor's as stored, so frames after a
damaged one are still told sound. The transaction a damaged frame is in may be one a crash
tore as it was written, and never acknowledged; a transaction committed after that one was,
and its loss is refused. The frames are read whenever a log is left over (a server that
stopped cleanly leaves none): about 0.2 ms a page, in plain Python, once at start."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import BinaryIO

HEADER = 32
FRAME_HEADER = 24
MAGIC_LE, MAGIC_BE = 0x377F0682, 0x377F0683  # the checksum's words little / big endian
VERSION = 3007000


def wal_refusal(db: Path) -> str | None:
    """Why `db` must not be opened: its WAL would be dropped with pages only it holds."""
    wal = db.with_name(db.name + "-wal")
    try:
        with wal.open("rb") as fh:
            header = fh.read(HEADER)
            if len(header) < HEADER:
                return None  # none, or new
            if _sound(header):
                return _frames_refusal(db, wal, _dropped_after_damage(fh, header))
            page_size = _page_size(db)
            if page_size is None:
                return _refusal(db, wal, "the database file has no readable header")
            lost = _pages_only_in(fh, db, page_size)
    except OSError:
        return None  # not there, or not readable: the store's opening says
    if not lost:
        return None  # every frame is in the database already: nothing would be lost
    pages = f"{lost} page{'s' if lost != 1 else ''}"
    return _refusal(db, wal, f"it holds {pages} the database file does not")


def _refusal(db: Path, wal: Path, why: str) -> str:
    return (
        f"the database's write-ahead log {wal} is damaged (its header fails its checksum) and "
        f"{why}: SQLite would drop it, and every run written since its last checkpoint with "
        f"it. Restore {db.name} and {wal.name} from a backup, or move {wal.name} aside to "
        "start without what it holds."
    )


def _frames_refusal(db: Path, wal: Path, dropped: tuple[int, int] | None) -> str | None:
    if dropped is None:
        return None
    frame, later = dropped
    transactions = f"{later} transaction{'s' if later != 1 else ''}"
    return (
        f"the database's write-ahead log {wal} is damaged (its frame {frame} fails its "
        f"checksum) and {transactions} committed after it would be dropped with it: SQLite "
        f"reads the log only up to that frame. Restore {db.name} and {wal.name} from a "
        f"backup, or move {wal.name} aside to start without what it holds."
    )


def _dropped_after_damage(fh: BinaryIO, header: bytes) -> tuple[int, int] | None:
    """(the first frame that fails its checksum, the transactions committed after the one it
    is in) when there are such transactions; else None. `fh` is read past the header."""
    order = ">" if struct.unpack(">I", header[:4])[0] == MAGIC_BE else "<"
    page_size = struct.unpack(">I", header[8:12])[0]
    if not 512 <= page_size <= 65536 or page_size & (page_size - 1):
        return None  # no page size SQLite writes: SQLite's to refuse, not frames to read
    salts = header[16:24]
    seed = struct.unpack(">II", header[24:32])
    size = FRAME_HEADER + page_size
    damaged = 0  # the first frame that fails, once found
    torn_commit = False  # the commit that ends the damaged frame's transaction was met
    later = 0
    number = 0
    while len(frame := fh.read(size)) == size:
        number += 1
        pgno, commit = struct.unpack(">II", frame[:8])
        if frame[8:16] != salts or pgno == 0:
            break  # an older generation's frames, or none: the log's end
        stored = struct.unpack(">II", frame[16:24])
        sound = _checksum(order, frame[:8] + frame[FRAME_HEADER:], seed) == stored
        seed = stored
        if not damaged:
            damaged = 0 if sound else number
            torn_commit = bool(damaged and commit)
        elif sound and commit:
            if torn_commit:
                later += 1
            torn_commit = True
    return (damaged, later) if damaged and later else None


def _checksum(order: str, data: bytes, seed: tuple[int, int]) -> tuple[int, int]:
    """SQLite's WAL checksum of `data` (a frame's first 8 bytes, then its page), chained."""
    s1, s2 = seed
    for x0, x1 in struct.iter_unpack(f"{order}II", data):
        s1 = (s1 + x0 + s2) & 0xFFFFFFFF
        s2 = (s2 + x1 + s1) & 0xFFFFFFFF
    return s1, s2


def _sound(header: bytes) -> bool:
    magic, version = struct.unpack(">II", header[:8])
    if magic not in (MAGIC_LE, MAGIC_BE) or version != VERSION:
        return False
    order = ">" if magic == MAGIC_BE else "<"
    return _checksum(order, header[:24], (0, 0)) == struct.unpack(">II", header[24:32])


def _page_size(db: Path) -> int | None:
    with db.open("rb") as fh:
        head = fh.read(100)
    if len(head) < 100 or not head.startswith(b"SQLite format 3\0"):
        return None
    size = struct.unpack(">H", head[16:18])[0]
    size = 65536 if size == 1 else size
    return size if size >= 512 and size & (size - 1) == 0 else None


def _pages_only_in(fh: BinaryIO, db: Path, page_size: int) -> int:
    """How many pages' last committed version in the log (`fh`, read past its header) differs
    from the database's. The frames of one generation share its salts: the first frame's."""
    size = FRAME_HEADER + page_size
    latest: dict[int, bytes] = {}
    committed: dict[int, bytes] = {}  # page -> a digest of its last committed version
    salts, pages = None, 0
    while len(frame := fh.read(size)) == size:
        pgno, commit = struct.unpack(">II", frame[:8])
        if salts is None:
            salts = frame[8:16]
        if frame[8:16] != salts or pgno == 0:
            break  # an older generation's frames, or none
        latest[pgno] = hashlib.blake2b(frame[FRAME_HEADER:], digest_size=16).digest()
        if commit:  # a transaction's last frame, with the database's size after it
            committed.update(latest)
            latest.clear()
            pages = commit
    differing = 0
    with db.open("rb") as dfh:
        for pgno, digest in committed.items():
            if pgno > pages:
                continue  # past the database's end once the log's last commit shrank it
            dfh.seek((pgno - 1) * page_size)
            if hashlib.blake2b(dfh.read(page_size), digest_size=16).digest() != digest:
                differing += 1
    return differing
