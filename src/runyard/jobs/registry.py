"""The jobs directory, scanned off the event loop with a cache invalidated by mtime."""

from __future__ import annotations

import asyncio
import heapq
import os
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from runyard.jobs.params import JsonCeiling
from runyard.jobs.reading import PASSING
from runyard.jobs.sandbox import SandboxPolicy
from runyard.jobs.spec import Job, LoadError, load_job
from runyard.regular_files import kind_of

log = structlog.get_logger(__name__)

# What a file was when last loaded (device, inode, mtime, size): a file replaced by another
# of the same size in the same clock tick (a link moved, a rename into place) is read again.
# the inode's change time too: a file rewritten in place with its size and mtime put back
# (`cp -p`, tar, a restore of mtimes) changes only it, which nobody can set
Stamp = tuple[int, int, int, int, int]
Loaded = tuple[Stamp | None, Job | LoadError]  # None: nothing to compare, looked at each scan

# Every job is held in memory and every file is looked at again at each rescan (once a second
# while there are requests): a directory of a million job files must not make each scan read
# them all. Past this many, in name order, the rest are one load error of the directory.
MAX_JOB_FILES = 10_000


@dataclass(frozen=True, slots=True)
class JobSnapshot:
    """All jobs and load errors as of one scan; immutable, so readers never see a half scan."""

    jobs: dict[str, Job] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # file name -> message


class JobRegistry:
    """Rescans at most every `refresh_s`; unchanged files (same file, mtime and size) are not
    reparsed."""

    def __init__(
        self, directory: Path, refresh_s: float = 1.0, ceiling: JsonCeiling | None = None,
        sandbox: SandboxPolicy | None = None, max_files: int = MAX_JOB_FILES,
    ) -> None:  # fmt: skip
        self.max_files = max_files
        self.directory = directory
        self.refresh_s = refresh_s
        self.ceiling = ceiling or JsonCeiling()
        self.sandbox = sandbox or SandboxPolicy()
        self._cache: dict[str, Loaded] = {}
        self._snapshot = JobSnapshot()
        self._checked_at = float("-inf")
        self._lock = asyncio.Lock()
        self._over = False  # the last scan left files out (logged once, not each scan)
        # told of each scan's jobs, on the loop, as it is made: what a job declared is heard
        # even if its file goes before anyone asks again (services/job_limits.py)
        self.listeners: list[Callable[[Mapping[str, Job]], None]] = []

    async def snapshot(self) -> JobSnapshot:
        if time.monotonic() - self._checked_at < self.refresh_s:
            return self._snapshot
        async with self._lock:
            if time.monotonic() - self._checked_at >= self.refresh_s:
                self._snapshot = await asyncio.to_thread(self.scan)
                self._checked_at = time.monotonic()
                for heard in self.listeners:
                    heard(self._snapshot.jobs)
        return self._snapshot

    @property
    def last_scan(self) -> JobSnapshot | None:
        """The jobs as last scanned if that is recent enough to be `snapshot()`'s answer
        (None: it would scan again), for a caller that cannot wait."""
        if time.monotonic() - self._checked_at < self.refresh_s:
            return self._snapshot
        return None

    @property
    def sandboxed(self) -> bool:
        """Whether a job of the last scan runs sandboxed (readiness then probes bubblewrap)."""
        return any(job.spec.sandbox is not None for job in self._snapshot.jobs.values())

    def undeclared(self, name: str) -> str:
        """Why `name` names no job, for its 404: a file of that name that failed to load is
        said (a probe: "not declared", with no word of the broken file beside it)."""
        error = self._snapshot.errors.get(f"{name}.toml")
        if error is None:
            return f"job {name!r} is not declared"
        shown = error if len(error) <= 300 else error[:299] + "\u2026"
        return f"job {name!r} is not declared: its file {name}.toml failed to load: {shown}"

    async def get(self, name: str) -> Job | None:
        last = self._snapshot.jobs.get(name)
        if last is not None and self._lock.locked():
            # a rescan is under way: a job the last one had answers meanwhile (a probe: twenty
            # slow files held a submit of an unchanged job 36 s behind the scan); one it did
            # not have may be new, and is waited for
            return last
        return (await self.snapshot()).jobs.get(name)

    def scan(self) -> JobSnapshot:
        """Blocking: call from a thread (or before the event loop starts). Whatever one file
        is or holds, it is that file's load error: never a scan that raises or waits."""
        seen: dict[str, Loaded] = {}
        try:
            files, total = _job_files(self.directory, self.max_files)
        except OSError as exc:
            fault = {_shown(str(self.directory)): _shown(f"cannot read jobs directory: {exc}")}
            if exc.errno not in PASSING:
                # gone, or no directory this server may read (a symlink loop, a permission):
                # no job is declared, and none of the last scan's comes back with a passing
                # fault later (a probe: an ELOOP republished jobs removed before it)
                self._cache = {}
                return JobSnapshot(errors=fault)
            # out of descriptors, an I/O error: a passing fault must not undeclare every job,
            # so the last scan's jobs stand (with the fault reported) until a scan succeeds
            log.warning("jobs_dir_unreadable", error=str(exc))
            last = _snapshot_of(self._cache)
            return JobSnapshot(jobs=last.jobs, errors={**last.errors, **fault})
        for entry in files[: self.max_files]:
            loaded = self._entry(entry)
            if loaded is not None:
                seen[entry.name] = loaded
        self._cache = seen
        snapshot = _snapshot_of(seen)
        if total > self.max_files:
            over = total - self.max_files
            why = (
                f"{over} job files were not loaded: a jobs directory holds at most "
                f"{self.max_files} (the first left out is {files[self.max_files].name})"
            )
            snapshot.errors[_shown(str(self.directory))] = _shown(why)
            if not self._over:
                log.warning("job_files_over_limit", left_out=over, limit=self.max_files)
            self._over = True
        else:
            self._over = False
        return snapshot

    def _entry(self, entry: os.DirEntry[str]) -> Loaded | None:
        """One file's job or load error; None if it went since the listing."""
        cached = self._cache.get(entry.name)
        was = cached[1] if cached else None
        try:
            st = entry.stat()  # through a link: its target is the job file
        except OSError as exc:
            return self._unstatable(entry, exc, cached)
        stamp = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
        # a job the host could not sandbox is looked at again: bwrap may be installed since
        if cached is not None and cached[0] == stamp and not _again(cached[1]):
            return cached
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the scan, a device never end
            why = f"not a regular file ({kind_of(st.st_mode)})"
            return stamp, self._failed(LoadError(Path(entry.path), why), was)
        result = self._load(entry.path, was)
        if isinstance(result, LoadError) and result.passing and cached is not None:
            return cached  # a passing fault: keep what it was, read it again next scan
        return stamp, result

    def _unstatable(
        self, entry: os.DirEntry[str], exc: OSError, cached: Loaded | None
    ) -> Loaded | None:
        if isinstance(exc, FileNotFoundError) and not _is_link(entry):
            return None  # removed since the listing
        if exc.errno in PASSING and cached is not None:
            return cached  # a passing fault (EIO): keep what it was, look again next scan
        # a link to nothing or a loop of links: the job is declared, and broken
        was = cached[1] if cached else None
        return None, self._failed(LoadError(Path(entry.path), _unfollowed(exc)), was)

    def _load(self, path: str, was: Job | LoadError | None) -> Job | LoadError:
        try:
            return load_job(Path(path), self.ceiling, self.sandbox)
        except LoadError as exc:
            return self._failed(exc, was)
        except Exception as exc:
            # a fault of runyard's own reading one file must not stop every job's lookups (and
            # start-up with them): it is that file's load error, with its traceback logged
            log.exception("job_load_crashed", file=Path(path).name)
            why = f"could not be loaded: {type(exc).__name__}: {exc}"[:500]
            return LoadError(Path(path), why)

    @staticmethod
    def _failed(exc: LoadError, was: Job | LoadError | None) -> LoadError:
        if str(was) != str(exc):  # logged once, not at every scan of a host's fault
            log.warning("job_load_error", file=exc.path.name, error=exc.message)
        # Kept as the file's error, it must hold nothing else: its traceback held the frame
        # that loaded it, whose `was` was the error before it, and so on, each with the file
        # read and its params' models (a probe: RSS +100 MB a minute for a job whose user
        # does not exist, looked at again at every scan); its context, the parser's error
        exc.__traceback__ = exc.__context__ = exc.__cause__ = None
        return exc


def _job_files(directory: Path, keep: int) -> tuple[list[os.DirEntry[str]], int]:
    """The first `keep` + 1 job files of `directory` by name, and how many there are: a huge
    directory is listed once, never held whole."""
    total = 0

    def counted(listing: Iterator[os.DirEntry[str]]) -> Iterator[os.DirEntry[str]]:
        nonlocal total
        for entry in listing:
            if entry.name.endswith(".toml") and not entry.name.startswith("."):
                total += 1
                yield entry

    with os.scandir(directory) as listing:
        first = heapq.nsmallest(keep + 1, counted(listing), key=lambda e: e.name)
    return first, total


def _is_link(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False


def _unfollowed(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "cannot read: a symbolic link to nothing (its target is missing)"
    return f"cannot read: {exc.strerror or exc}"


def _shown(text: str) -> str:
    """`text` as UTF-8 can carry it: a file name's bytes that are not UTF-8 (which Python
    holds as lone surrogates, and no JSON encoder takes: /v1/status was a 500) escaped."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name decoded to
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _again(result: Job | LoadError) -> bool:
    """A load error read again at each scan: the host's fault, or one of the moment."""
    return isinstance(result, LoadError) and (result.of_host or result.passing)


def _snapshot_of(seen: dict[str, Loaded]) -> JobSnapshot:
    jobs: dict[str, Job] = {}
    errors: dict[str, str] = {}
    models: dict[str, str] = {}  # model id -> the job answering to it (docs/openai.md)
    for fname, (_, result) in seen.items():
        if isinstance(result, LoadError):
            errors[_shown(fname)] = _shown(result.message)
            continue
        chat = result.spec.openai
        if chat is not None:
            model = chat.model_id(result.name)
            if model in models:
                # files are scanned in name order: the first one keeps the model
                errors[_shown(fname)] = f"openai.model {model!r} is already job {models[model]!r}'s"
                continue
            models[model] = result.name
        jobs[result.name] = result
    return JobSnapshot(jobs=jobs, errors=errors)
