"""The concurrency limit each job's runs are held to, for claims.

A queued run runs as it was submitted, whatever becomes of its job's file; its job's limit
too. The limit is the job's as declared now; for a job no longer declared (its file removed,
or broken), as it was last declared in this server's life, else as a stored run of it says
(read at start). A removed or broken file used to lift the limit: a job that must run one at
a time (a licence, a shared resource) ran its queued runs side by side (a probe).
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from runyard.jobs.spec import Job
from runyard.models import RunFilter, RunState
from runyard.store import Store

log = structlog.get_logger(__name__)
MAX_LOOKUPS = 1000  # undeclared jobs read at start: one indexed read each


class JobLimits:
    def __init__(self) -> None:
        self._limits: dict[str, int | None] = {}  # each job ever seen: its last limit
        self._seen: Mapping[str, Job] | None = None
        self._held: dict[str, int] = {}  # those with a limit

    def heard(self, jobs: Mapping[str, Job]) -> None:
        """A scan of the job files (registry.py tells each): every job's limit as declared
        in it. Heard as scanned, not at the next claim: a job declared, its runs submitted and
        its file removed while every slot was busy was never claimed for in between, and its
        queued runs went without a limit (a probe: two of a one-at-a-time job at once)."""
        for name, job in jobs.items():
            self._limits[name] = job.spec.concurrency

    def of(self, jobs: Mapping[str, Job]) -> dict[str, int]:
        """The limits to claim by, `jobs` being those declared now. Worked out again only
        when the registry's scan is another (a claim at each run's end asks)."""
        if jobs is not self._seen:
            self.heard(jobs)
            self._seen = jobs
            self._held = {name: n for name, n in self._limits.items() if n is not None}
        return self._held

    async def load(self, store: Store, declared: Mapping[str, Job]) -> None:
        """The limits of the jobs with runs queued or running that are not declared now, as
        the newest stored run of each has its job."""
        names: set[str] = set()
        for state in (RunState.QUEUED, RunState.RUNNING):
            names |= (await store.counts_by_job(state)).keys()
        missing = sorted(names - declared.keys())
        if len(missing) > MAX_LOOKUPS:
            log.warning("job_limits_not_all_read", undeclared=len(missing), read=MAX_LOOKUPS)
        for name in missing[:MAX_LOOKUPS]:
            page = await store.list_runs(RunFilter(job=name, limit=1))
            limit = page.runs[0].spec.get("concurrency") if page.runs else None
            if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1:
                self._limits[name] = limit
        self._seen = None  # worked out again at the next claim
