"""At start, what the run directories know that the store does not: the signs of a store that
lost writes it had committed (a torn WAL with `fsync` off, a database restored from a copy
older than the files). Such a store answers 404 for runs it accepted, or runs a program again
as an attempt it already made; nothing in its own rows shows it.

Two signs are looked for, and nothing is changed:
- a directory under `runs/` named as a run the store does not have (a deleted run's files
  are set aside before its record goes, services/removal.py: none is left under its name);
- a run the store has not finished, with files of an attempt number past the last it gave
  it (numbers are given once: its next attempt's files are set aside by the supervisor when
  it starts, execution/spawning.py, so none is taken for the new attempt's).

What is found is logged once (`store_behind_files`, a warning, with a few examples) and kept
for `GET /v1/status`. Only a store beside its files (SQLite) is audited: a shared database's
runs are spread over its members' directories.

Beside them, what is under `runs/` and is no run's directory is told apart, not taken for a
sign of lost writes (a probe: a stray `junkdir` was reported as writes the store lost): an
entry named as no run is named (a run's name is its id, a ULID), `foreign`; one named as a
run the store has that is not a directory (a link, a file, a FIFO put in its place) is that
run's damage, `damaged_runs`: its log and artifacts cannot be read. Both are logged once,
left as they are, and kept for the status too.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from runyard.background import Background
from runyard.store import Store

log = structlog.get_logger(__name__)

CHUNK = 500  # run ids asked of the store at once
EXAMPLES = 5
_RUN_ID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")  # a run's directory: its id (clock.new_id)
_ATTEMPT_FILE = re.compile(r"attempt-([0-9]{1,9})\.(?:log|exit\.json)")


@dataclass(frozen=True, slots=True)
class FileAudit:
    done: bool = False
    unknown_runs: int = 0  # directories of runs the store does not have
    attempts_ahead: int = 0  # unfinished runs with files of an attempt past the store's last
    examples: tuple[str, ...] = ()
    error: str | None = None
    damaged_runs: int = 0  # runs the store has whose directory is no directory
    foreign: int = 0  # entries named as no run
    odd_examples: tuple[str, ...] = ()  # of those two, shown safely

    def as_dict(self) -> dict[str, object]:
        return {
            "done": self.done, "unknown_runs": self.unknown_runs,
            "attempts_ahead": self.attempts_ahead, "examples": list(self.examples),
            "error": self.error, "damaged_runs": self.damaged_runs, "foreign": self.foreign,
            "odd_examples": list(self.odd_examples),
        }  # fmt: skip


async def audit(store: Store, runs_dir: Path) -> FileAudit:
    """One pass over the run directories, a chunk of them at a time: the directory is read
    as it goes (ten million runs are never held at once), and each chunk is one store read."""
    unknown: list[str] = []
    ahead: list[str] = []
    damaged: list[str] = []
    names = await asyncio.to_thread(RunNames, runs_dir)
    try:
        while (chunk := await asyncio.to_thread(names.next_chunk)) or names.not_dirs:
            not_dirs, names.not_dirs = names.not_dirs, []
            if not_dirs:  # named as runs: the store's are damaged, the rest are no runs
                had = await store.last_attempts(not_dirs)
                damaged += [name for name in not_dirs if name in had]
                names.foreign += len(not_dirs) - len(had)
            last = await store.last_attempts(chunk) if chunk else {}
            missing = [name for name in chunk if name not in last]
            if missing:  # gone meanwhile (deleted, its record with it) is no sign
                unknown += await asyncio.to_thread(_still_there, runs_dir, missing)
            unfinished = {name: n for name, n in last.items() if n is not None}
            if unfinished:
                found = await asyncio.to_thread(_highest_attempts, runs_dir, unfinished)
                if found:  # a claim made since the store was asked is no sign either
                    again = await store.last_attempts(list(found))
                    ahead += [
                        f"{name}/attempt-{number}"
                        for name, number in found.items()
                        if (now := again.get(name)) is not None and number > now
                    ]
    finally:
        await asyncio.to_thread(names.close)
    odd = [f"{name} (not a directory)" for name in damaged] + names.foreign_examples
    result = FileAudit(
        done=True, unknown_runs=len(unknown), attempts_ahead=len(ahead),
        examples=tuple((unknown + ahead)[:EXAMPLES]), damaged_runs=len(damaged),
        foreign=names.foreign, odd_examples=tuple(odd[:EXAMPLES]),
    )  # fmt: skip
    if damaged or names.foreign:
        log.warning(
            "runs_dir_not_runs", damaged_runs=len(damaged), foreign=names.foreign,
            examples=list(result.odd_examples),
            hint="left as they are: a run named here has its directory replaced (its log and "
            "artifacts cannot be read); the rest are named as no run",
        )  # fmt: skip
    if unknown or ahead:
        log.warning(
            "store_behind_files", unknown_runs=len(unknown), attempts_ahead=len(ahead),
            examples=list(result.examples),
            hint="the store lost writes it had committed (fsync off and a crash, or an older "
            "copy restored): these runs' files are kept, not served",
        )  # fmt: skip
    return result


class RunNames:
    """The runs directory read on threads, a chunk at a time. Each read and the close hold one
    lock: an audit cancelled mid-read (the server stopping) closed the directory from another
    thread while the read went on, and freed the iterator under it (a segfault)."""

    def __init__(self, runs_dir: Path) -> None:
        self.not_dirs: list[str] = []  # named as runs, not directories: taken by the audit
        self.foreign = 0  # named as no run (a dot-name is runyard's own: `.deleting`)
        self.foreign_examples: list[str] = []
        self._lock = threading.Lock()
        try:
            self._entries: os._ScandirIterator[str] | None = os.scandir(runs_dir)
        except FileNotFoundError:
            self._entries = None

    def next_chunk(self) -> list[str]:
        with self._lock:
            return [] if self._entries is None else _next_names(self._entries, self)

    def close(self) -> None:
        with self._lock:
            if self._entries is not None:
                self._entries.close()
                self._entries = None


def _next_names(entries: Iterator[os.DirEntry[str]], odd: RunNames) -> list[str]:
    """The next CHUNK run directories' names (fewer at the end, none after it); what is no
    run's directory is noted on `odd` on the way."""
    names: list[str] = []
    for e in entries:
        if e.name.startswith("."):
            continue
        if not _RUN_ID.fullmatch(e.name):
            odd.foreign += 1
            if len(odd.foreign_examples) < EXAMPLES:
                odd.foreign_examples.append(ascii(e.name[:80]))
        elif not e.is_dir(follow_symlinks=False):
            odd.not_dirs.append(e.name)
            if len(odd.not_dirs) == CHUNK:
                break
        else:
            names.append(e.name)
            if len(names) == CHUNK:
                break
    return names


def _still_there(runs_dir: Path, names: list[str]) -> list[str]:
    return [name for name in names if (runs_dir / name).is_dir()]


def _highest_attempts(runs_dir: Path, last: dict[str, int]) -> dict[str, int]:
    """{run: the highest attempt number its files name} where that is past `last`'s."""
    found: dict[str, int] = {}
    for name, known in last.items():
        try:
            files = [path.name for path in (runs_dir / name).iterdir()]
        except OSError:
            continue
        numbers = [int(m[1]) for f in files if (m := _ATTEMPT_FILE.fullmatch(f))]
        if numbers and max(numbers) > known:
            found[name] = max(numbers)
    return found


class FileAuditor:
    """The audit, once, in the background after start (a deep data directory takes seconds:
    nothing waits for it); `state` is what it found so far."""

    def __init__(self, store: Store, runs_dir: Path, *, enabled: bool) -> None:
        self.store, self.runs_dir, self.enabled = store, runs_dir, enabled
        self.state = FileAudit()
        self._task = Background("file-audit")

    def start(self) -> None:
        if self.enabled:
            self._task.start(self._run())

    async def _run(self) -> None:
        try:
            self.state = await audit(self.store, self.runs_dir)
        except Exception as exc:  # a report, never a reason to stop serving
            log.warning("file_audit_failed", error=repr(exc))
            self.state = FileAudit(error=repr(exc)[:200])

    async def stop(self) -> None:
        await self._task.stop()
