"""Following the jobs: one squeue per period for all of them, and what each answer means.

A job Slurm says may still run stays the attempt's (requeued, preempted-to-requeue, pending
again: one live attempt under one job id). A job that ended or vanished is settled from its
exit file; without one it is given `exit_grace_s` (shared filesystems lag) — never read as
success — unless runyard stopped it and knows no file can come. Stopping is TERM to the batch
shell of a running job (which passes it to the program), or a plain scancel of one that does
not run; a job still there a grace after its TERM gets the plain scancel too. Every step is
retried at the next poll if Slurm refused it, so a busy controller delays, never loses, one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from runyard import fastjson
from runyard.execution.diskwrites import write_exit_file
from runyard.execution.protocol import ExitRecord, UnreadableExit
from runyard.execution.slurm.commands import QueuedJob, SlurmCommands, SlurmError
from runyard.execution.slurm.tracking import Tracked, write_job_file
from runyard.models import parse_attempt_key

log = structlog.get_logger(__name__)

Deliver = Callable[[ExitRecord | UnreadableExit], Awaitable[None]]
ReadExit = Callable[[str, int], Awaitable[ExitRecord | UnreadableExit | None]]


def job_file(root: Path, attempt: int) -> str:
    return f"{root}/attempt-{attempt}.slurm.json"


@dataclass
class Follower:
    commands: SlurmCommands
    runs_dir: Path
    read_exit: ReadExit
    exit_grace_s: float
    tracked: dict[str, Tracked] = field(default_factory=dict)
    lease_until: float | None = None  # cluster mode: past it, this server's jobs are fenced

    def root(self, key: str) -> Path:
        return self.runs_dir / parse_attempt_key(key)[0]

    async def settle(self, jobs: dict[str, QueuedJob], deliver: Deliver) -> None:
        """Each tracked job moves on from what one squeue said of all of them."""
        now = time.monotonic()
        fenced = self.lease_until is not None and time.time() > self.lease_until
        for tracked in list(self.tracked.values()):
            job = jobs.get(tracked.job_id)
            try:
                if job is not None and tracked.live(job.state):
                    await self._live(tracked, job, now, fenced)
                else:
                    await self._ended(tracked, job, now, deliver)
            except SlurmError as exc:  # asked again at the next poll
                log.warning("slurm_step_failed", key=tracked.key, error=exc.message)

    async def _live(self, tracked: Tracked, job: QueuedJob, now: float, fenced: bool) -> None:
        if job.state == "RUNNING" and tracked.running_since is None:
            tracked.running_since = now
        elif job.state == "PENDING" and tracked.running_since is not None:
            tracked.running_since = None  # requeued: its clock starts again when it runs
            tracked.restarts += 1
            log.info("slurm_requeued", key=tracked.key, job_id=tracked.job_id, reason=job.reason)
        tracked.state, tracked.reason, tracked.ended_since = job.state, job.reason, None
        if tracked.killed_by is not None:
            await self._finish_stop(tracked, now)
        elif fenced:
            await self.stop(tracked, "fenced")
        elif (
            tracked.timeout_s is not None and tracked.running_since is not None
            and now - tracked.running_since >= tracked.timeout_s
        ):  # fmt: skip
            await self.stop(tracked, "timeout")

    async def stop(self, tracked: Tracked, reason: str) -> None:
        """Why is recorded first (durably: a restarted server still knows), then the signal."""
        if tracked.killed_by is None:
            tracked.killed_by = reason
            try:
                await asyncio.to_thread(
                    write_job_file, job_file(self.root(tracked.key), _n(tracked)), tracked
                )
            except OSError as exc:
                log.warning("slurm_job_file_failed", key=tracked.key, error=str(exc))
        if tracked.state == "RUNNING":
            # only a running batch shell can be signalled (22.05 retries a signal to a job
            # in any other state for ever)
            await self.commands.cancel(tracked.job_id, signal="TERM")
            tracked.termed_at = time.monotonic()
        else:
            await self.commands.cancel(tracked.job_id)
            tracked.termed_at = 0.0  # nothing to wait for: its kill is sent

    async def _finish_stop(self, tracked: Tracked, now: float) -> None:
        """Stopping, and still there: signal again if the first never went (refused, or sent
        by a server that then restarted), the plain kill once its grace is over."""
        if tracked.termed_at is None:
            await self.stop(tracked, tracked.killed_by or "cancel")
        elif now - tracked.termed_at >= tracked.kill_grace_s:
            await self.commands.cancel(tracked.job_id)

    async def _ended(
        self, tracked: Tracked, job: QueuedJob | None, now: float, deliver: Deliver
    ) -> None:
        if job is not None:
            tracked.state, tracked.reason = job.state, job.reason
        elif tracked.ended_since is None:
            tracked.state, tracked.reason = "GONE", "no longer in squeue"
        if tracked.ended_since is None:
            tracked.ended_since = now
        if tracked.killed_by is None and tracked.state == "TIMEOUT":
            tracked.killed_by = "timeout"  # Slurm's --time backstop: a timeout all the same
        if tracked.state == "PREEMPTED" and tracked.killed_by is None:
            # not requeue-able: it did not fail, it was put off; lost, retried per its policy
            why = f"Slurm job {tracked.job_id} was preempted (requeue = false)"
            await self._deliver(tracked, UnreadableExit(key=tracked.key, why=why), deliver)
            return
        record = await self.read_exit(*parse_attempt_key(tracked.key))
        if record is None and not self._no_file_coming(tracked, now):
            return  # the file may still be on its way from the compute node
        if record is None:
            record = await self._without_file(tracked, listed=job is not None)
            if record is None:
                return
        await self._deliver(tracked, record, deliver)

    async def _without_file(
        self, tracked: Tracked, *, listed: bool
    ) -> ExitRecord | UnreadableExit | None:
        """Its end, its grace for an exit file over: runyard's record of a job it stopped, or
        lost; None if it has not ended after all, or the controller does not say."""
        if tracked.killed_by is not None:
            return await self._record_without_file(tracked)
        shown = await self._shown(tracked)
        if shown is None:
            return None  # the controller does not answer: ask again at the next poll
        if not listed and tracked.live(shown.get("JobState", "")):
            # squeue left it out (an empty or partial answer) and the controller has it
            # alive: not ended. Read as lost, it was retried beside itself, and again.
            log.warning("slurm_job_not_listed", key=tracked.key, job_id=tracked.job_id,
                        state=shown.get("JobState"))  # fmt: skip
            tracked.ended_since = None
            return None
        return await self._lost_without_file(tracked, shown)

    def _no_file_coming(self, tracked: Tracked, now: float) -> bool:
        """Whether to stop waiting for the exit file: the grace is over, or runyard stopped a
        job whose script never writes one then (it never ran, or it may requeue)."""
        if tracked.ended_since is not None and now - tracked.ended_since >= self.exit_grace_s:
            return True
        stopped = tracked.killed_by is not None
        return stopped and (tracked.running_since is None or tracked.requeue)

    async def _record_without_file(self, tracked: Tracked) -> ExitRecord:
        """Stopped by runyard, its script left no record (a requeue-able job does not): ours."""
        record = ExitRecord(
            key=tracked.key, pid=int(tracked.job_id), exit_code=None, signal=15,
            killed_by=tracked.killed_by, started_at=None, ended_at=time.time(),
        )  # fmt: skip
        path = self.root(tracked.key) / f"attempt-{_n(tracked)}.exit.json"
        try:  # the event tells a connected server anyway; a reconcile reads the file
            await asyncio.to_thread(
                write_exit_file, path, fastjson.dumps(record.to_dict()), fsync=False
            )
        except OSError as exc:
            log.warning("slurm_exit_file_failed", key=tracked.key, error=str(exc))
        return record

    async def alive_as(self, found: Tracked) -> str | None:
        """The name the controller gives the job of `found` (read from its job file), if it
        has it in a state it may run in; None if not. Asked of a job squeue did not list
        (an answer can leave a running job out); SlurmError if the controller is silent."""
        shown = await self.commands.show_job(found.job_id)
        state = shown.get("JobState", "")
        return shown.get("JobName", "") if found.live(state) or state == "PREEMPTED" else None

    async def _shown(self, tracked: Tracked) -> dict[str, str] | None:
        """`scontrol show job` of it ({} once purged), None if the controller is silent."""
        try:
            return await self.commands.show_job(tracked.job_id)
        except SlurmError as exc:
            log.warning("slurm_end_unknown", key=tracked.key, error=exc.message)
            return None

    async def _lost_without_file(self, tracked: Tracked, shown: dict[str, str]) -> UnreadableExit:
        """How Slurm saw the end, for the reason only (never the outcome: without an exit
        file the attempt is lost whatever Slurm says): `scontrol show job` while the
        controller keeps the job, `sacct` once it is purged where accounting works."""
        said = f"{tracked.state} ({tracked.reason})"
        if shown:
            said = (
                f"{shown.get('JobState', tracked.state)} ({shown.get('Reason', '')}, "
                f"ExitCode={shown.get('ExitCode', '?')})"
            )
        else:
            try:
                if await self.commands.accounting():
                    accounted = await self.commands.accounted(tracked.job_id)
                    if accounted:
                        said = f"{accounted[0]} (ExitCode={accounted[1]}, from sacct)"
            except SlurmError as exc:
                log.warning("slurm_end_unknown", key=tracked.key, error=exc.message)
        why = f"Slurm job {tracked.job_id} ended {said} without an exit file"
        return UnreadableExit(key=tracked.key, why=why)

    async def _deliver(
        self, tracked: Tracked, record: ExitRecord | UnreadableExit, deliver: Deliver
    ) -> None:
        try:
            await deliver(record)
        except Exception:
            log.exception("slurm_exit_not_recorded", key=tracked.key)
            return  # tracked still: the next poll tells it again
        self.tracked.pop(tracked.key, None)


def _n(tracked: Tracked) -> int:
    return parse_attempt_key(tracked.key)[1]
