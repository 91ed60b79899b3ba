"""The jobs directory, scanned off the event loop with a cache invalidated by mtime."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from runyard.jobs.params import JsonCeiling
from runyard.jobs.sandbox import SandboxPolicy
from runyard.jobs.spec import Job, LoadError, load_job

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class JobSnapshot:
    """All jobs and load errors as of one scan; immutable, so readers never see a half scan."""

    jobs: dict[str, Job] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # file name -> message


def _openable(path: str) -> bool:
    """False on a fault of this moment (no descriptor left, EIO), not of the file itself."""
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
    except FileNotFoundError:
        return True  # gone since the listing: load_job reports it as the file's problem
    except PermissionError:
        return True
    except OSError:
        return False
    return True


class JobRegistry:
    """Rescans at most every `refresh_s`; unchanged files (same mtime and size) are not reparsed."""

    def __init__(
        self, directory: Path, refresh_s: float = 1.0, ceiling: JsonCeiling | None = None,
        sandbox: SandboxPolicy | None = None,
    ) -> None:  # fmt: skip
        self.directory = directory
        self.refresh_s = refresh_s
        self.ceiling = ceiling or JsonCeiling()
        self.sandbox = sandbox or SandboxPolicy()
        self._cache: dict[str, tuple[tuple[int, int], Job | LoadError]] = {}
        self._snapshot = JobSnapshot()
        self._checked_at = float("-inf")
        self._lock = asyncio.Lock()

    async def snapshot(self) -> JobSnapshot:
        if time.monotonic() - self._checked_at < self.refresh_s:
            return self._snapshot
        async with self._lock:
            if time.monotonic() - self._checked_at >= self.refresh_s:
                self._snapshot = await asyncio.to_thread(self.scan)
                self._checked_at = time.monotonic()
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

    async def get(self, name: str) -> Job | None:
        return (await self.snapshot()).jobs.get(name)

    def scan(self) -> JobSnapshot:
        """Blocking: call from a thread (or before the event loop starts)."""
        seen: dict[str, tuple[tuple[int, int], Job | LoadError]] = {}
        try:
            entries = sorted(os.scandir(self.directory), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError) as exc:
            return JobSnapshot(errors={str(self.directory): f"cannot read jobs directory: {exc}"})
        except OSError as exc:
            # out of descriptors, an I/O error: a passing fault must not undeclare every job,
            # so the last scan's jobs stand (with the fault reported) until a scan succeeds
            log.warning("jobs_dir_unreadable", error=str(exc))
            last = _snapshot_of(self._cache)
            fault = {str(self.directory): f"cannot read jobs directory: {exc}"}
            return JobSnapshot(jobs=last.jobs, errors={**last.errors, **fault})
        for entry in entries:
            if not entry.name.endswith(".toml") or entry.name.startswith("."):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            stamp = (st.st_mtime_ns, st.st_size)
            cached = self._cache.get(entry.name)
            # a job the host could not sandbox is looked at again: bwrap may be installed since
            if cached is not None and cached[0] == stamp and not _of_host(cached[1]):
                seen[entry.name] = cached
                continue
            if not _openable(entry.path):
                if cached is not None:  # a passing fault: keep what it was, retry next scan
                    seen[entry.name] = (cached[0], cached[1])
                continue
            seen[entry.name] = (stamp, self._load(entry.path, cached[1] if cached else None))
        self._cache = seen
        return _snapshot_of(seen)

    def _load(self, path: str, was: Job | LoadError | None) -> Job | LoadError:
        try:
            return load_job(Path(path), self.ceiling, self.sandbox)
        except LoadError as exc:
            if str(was) != str(exc):  # logged once, not at every scan of a host's fault
                log.warning("job_load_error", file=exc.path.name, error=exc.message)
            return exc


def _of_host(result: Job | LoadError) -> bool:
    return isinstance(result, LoadError) and result.of_host


def _snapshot_of(seen: dict[str, tuple[tuple[int, int], Job | LoadError]]) -> JobSnapshot:
    jobs: dict[str, Job] = {}
    errors: dict[str, str] = {}
    models: dict[str, str] = {}  # model id -> the job answering to it (docs/openai.md)
    for fname, (_, result) in seen.items():
        if isinstance(result, LoadError):
            errors[fname] = result.message
            continue
        chat = result.spec.openai
        if chat is not None:
            model = chat.model_id(result.name)
            if model in models:
                # files are scanned in name order: the first one keeps the model
                errors[fname] = f"openai.model {model!r} is already job {models[model]!r}'s"
                continue
            models[model] = result.name
        jobs[result.name] = result
    return JobSnapshot(jobs=jobs, errors=errors)
