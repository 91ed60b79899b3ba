"""The Slurm executor: an attempt is a Slurm batch job; one squeue per period follows them all.

How an attempt ended is read from its exit file in the shared run directory (written by the
batch script, script.py), never from Slurm's view of the batch job: Slurm says *that* a job
ended, the exit file says *how*. A job that ended or vanished without an exit file is given
`exit_grace_s` for the file to appear (shared filesystems lag), then it is lost — never read
as success. A job runyard stopped itself (cancel, timeout, fencing) whose script left no record
gets one written here, as the supervisor does for its programs.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import time
from dataclasses import replace
from pathlib import Path

import structlog

from runyard import fastjson
from runyard.background import Background, TaskGroup
from runyard.execution import workspace
from runyard.execution.base import (
    Executor,
    ExecutorEvents,
    ExecutorHealth,
    ExecutorUnavailableError,
    Launch,
    LaunchError,
    RunningAttempt,
    Started,
)
from runyard.execution.diskwrites import write_exit_file
from runyard.execution.environment import base_env
from runyard.execution.executor import read_exit_file, spawn_request
from runyard.execution.layout import RunPaths
from runyard.execution.protocol import ExitRecord, SpawnRequest, UnreadableExit
from runyard.execution.slurm.commands import (
    QueuedJob,
    SlurmCommands,
    SlurmError,
    SlurmUnavailableError,
)
from runyard.execution.slurm.script import ScriptSpec, batch_script, sbatch_options
from runyard.execution.slurm.tracking import (
    Tracked,
    job_name,
    key_of,
    read_job_file,
    write_job_file,
)
from runyard.execution.spawning import prepare
from runyard.fstree import remove_tree
from runyard.models import attempt_key, parse_attempt_key

log = structlog.get_logger(__name__)


def _job_file(root: Path, attempt: int) -> str:
    return f"{root}/attempt-{attempt}.slurm.json"


class SlurmExecutor:
    """Places attempts on Slurm (see the module's docstring)."""

    def __init__(
        self,
        runs_dir: Path,
        jobs_dir: Path,
        commands: SlurmCommands,
        *,
        server_id: str,
        poll_s: float = 5.0,
        max_in_flight: int = 1000,
        exit_grace_s: float = 30.0,
    ) -> None:
        self.runs_dir = runs_dir
        self.jobs_dir = jobs_dir
        self.commands = commands
        self.server_id = server_id
        self.poll_s = poll_s
        self.max_in_flight = max_in_flight
        self.exit_grace_s = exit_grace_s
        self.user = getpass.getuser()
        self.tracked: dict[str, Tracked] = {}  # by attempt key: submitted and not yet ended
        self.last_poll: float | None = None  # wall clock of the last squeue that answered
        self.last_error: str | None = None
        self.polls = 0
        self._events: ExecutorEvents | None = None
        self._base_env = base_env()
        self._poller = Background("slurm-poll")
        self._kills = TaskGroup("slurm-kill")
        self._lease_until: float | None = None
        self._wake = asyncio.Event()
        self._stopped = True  # until start: nothing is known of Slurm

    # -- the protocol ---------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return not self._stopped and self.last_error is None

    async def start(self, events: ExecutorEvents) -> None:
        """Adopt this server's jobs Slurm still knows, then poll. Never raises: while the
        controller does not answer, `running` raises (nothing is read as lost) and readiness
        says so; the poller keeps trying."""
        self._events = events
        self._stopped = False
        with contextlib.suppress(SlurmError):
            await self._adopt()
        self._poller.start(self._poll_forever())

    async def reconnect(self) -> None:
        return None  # nothing to reconnect: every call is a command of its own

    async def stop(self) -> None:
        self._stopped = True
        await self._poller.stop()
        await self._kills.wait()

    async def health(self, timeout_s: float) -> ExecutorHealth:
        if self._stopped:
            raise ExecutorUnavailableError("the Slurm executor is stopped")
        try:
            async with asyncio.timeout(timeout_s):
                await self.commands.ping()
        except (SlurmError, TimeoutError) as exc:
            raise ExecutorUnavailableError(f"the Slurm controller does not answer: {exc}") from exc
        return ExecutorHealth()

    async def hold_lease(self, token: str, until: float, grace_s: float, timeout_s: float) -> None:
        """Cluster mode: past `until` unrenewed, this server's jobs are cancelled (fenced)
        before another server may retry their runs."""
        self._lease_until = until

    def paths(self, run_id: str) -> RunPaths:
        return RunPaths(self.runs_dir / run_id)

    async def launch(self, spec: Launch) -> Started:
        if attempt_key(spec.run_id, spec.attempt) in self.tracked:
            raise LaunchError(f"attempt {spec.run_id}.{spec.attempt} is already on Slurm")
        if len(self.tracked) >= self.max_in_flight:
            raise ExecutorUnavailableError(f"{len(self.tracked)} Slurm jobs in flight (the most)")
        req = spawn_request(spec, str(self.runs_dir), str(self.jobs_dir), self._base_env)
        paths = self.paths(spec.run_id)
        slurm = spec.slurm or {}
        tracked = Tracked(
            key=req.key, job_id="", timeout_s=spec.timeout_s, kill_grace_s=spec.kill_grace_s,
            requeue=bool(slurm.get("requeue")),
        )  # fmt: skip
        script = batch_script(ScriptSpec(
            key=req.key, argv=req.argv, cwd=req.cwd, env=req.env, exit_path=req.exit,
            progress_path=req.progress or "", requeue=tracked.requeue,
        ))  # fmt: skip
        try:
            await asyncio.to_thread(self._prepare, spec.workspace, paths, req)
        except (workspace.WorkspaceError, OSError) as exc:
            raise LaunchError(f"workspace: {exc}") from exc
        options = sbatch_options(
            name=job_name(self.server_id, req.key), log=req.log, cwd=req.cwd, slurm=slurm,
            resources=spec.resources or {}, timeout_s=spec.timeout_s,
            kill_grace_s=spec.kill_grace_s,
        )  # fmt: skip
        try:
            tracked.job_id = await self.commands.submit(options, script)
        except SlurmError as exc:
            if isinstance(exc, SlurmUnavailableError):
                raise ExecutorUnavailableError(str(exc)) from exc
            raise LaunchError(f"Slurm refused the job: {exc.message}") from exc
        self.tracked[req.key] = tracked
        try:
            await asyncio.to_thread(write_job_file, _job_file(paths.root, spec.attempt), tracked)
        except OSError as exc:  # the job name still finds it after a restart
            log.warning("slurm_job_file_failed", key=req.key, error=str(exc))
        log.info("slurm_submitted", key=req.key, job_id=tracked.job_id)
        return Started(int(tracked.job_id), 0, 0.0, time.time())

    def _prepare(self, spec: str, paths: RunPaths, req: SpawnRequest) -> None:
        """Blocking: the run's workspace (once per run), its params file and directories."""
        if spec != "empty" and not paths.workspace.exists():
            paths.root.mkdir(parents=True, exist_ok=True)
            workspace.prepare(spec, self.jobs_dir, paths.workspace)
        prepare(req)

    async def cancel(self, run_id: str, attempt: int, reason: str = "cancel") -> bool:
        """False if it is not ours or has already ended."""
        tracked = self.tracked.get(attempt_key(run_id, attempt))
        if tracked is None or tracked.ended_since is not None:
            return False
        await self._stop(tracked, reason)
        return True

    async def running(self) -> dict[str, RunningAttempt]:
        if self._stopped:
            raise ExecutorUnavailableError("the Slurm executor is stopped")
        if self.last_error is not None:
            raise ExecutorUnavailableError(f"Slurm does not answer: {self.last_error}")
        return {
            key: RunningAttempt(key, int(t.job_id), None, None, ended=t.ended_since is not None)
            for key, t in self.tracked.items()
        }

    async def read_exit(self, run_id: str, attempt: int) -> ExitRecord | UnreadableExit | None:
        key = attempt_key(run_id, attempt)
        record = await asyncio.to_thread(read_exit_file, self.paths(run_id).exit_file(attempt), key)
        if isinstance(record, ExitRecord) and record.killed_by is None:
            tracked = self.tracked.get(key) or await asyncio.to_thread(
                read_job_file, _job_file(self.paths(run_id).root, attempt), key
            )
            if tracked is not None and tracked.killed_by is not None:
                record = _with_killed_by(record, tracked.killed_by)
        return record

    async def owns(self, run_id: str, attempt: int) -> bool:
        """Whether this attempt was placed on Slurm (by this server, now or before)."""
        key = attempt_key(run_id, attempt)
        if key in self.tracked:
            return True
        path = Path(_job_file(self.paths(run_id).root, attempt))
        return await asyncio.to_thread(path.exists)

    async def kill_leftovers(
        self, run_id: str, attempt: int, pid: int | None, start_time: float | None
    ) -> int:
        key = attempt_key(run_id, attempt)
        found = await asyncio.to_thread(
            read_job_file, _job_file(self.paths(run_id).root, attempt), key
        )
        if found is None:
            return 0
        # the job file lies in the run's directory, where its program may write: cancel only
        # a job Slurm itself names as this attempt's (never somebody else's job id)
        jobs = await self.commands.queue(self.user)
        name = job_name(self.server_id, key)
        if not any(j.job_id == found.job_id and j.name == name for j in jobs):
            return 0
        await self.commands.cancel(found.job_id)
        return 1

    async def remove_files(self, run_id: str) -> None:
        await asyncio.to_thread(remove_tree, self.paths(run_id).root)

    # -- following the jobs ----------------------------------------------------------------

    async def _adopt(self) -> None:
        for job in await self._queue():
            key = key_of(job.name, self.server_id)
            if key is None or key in self.tracked:
                continue
            run_id, attempt = parse_attempt_key(key)
            found = await asyncio.to_thread(
                read_job_file, _job_file(self.paths(run_id).root, attempt), key, job.job_id
            )
            self.tracked[key] = found or Tracked(key, job.job_id, None, 10.0, False)
            log.info("slurm_adopted", key=key, job_id=job.job_id, state=job.state)

    async def _queue(self) -> list[QueuedJob]:
        try:
            jobs = await self.commands.queue(self.user)
        except SlurmError as exc:
            self.last_error = exc.message
            log.warning("slurm_poll_failed", error=exc.message)
            raise
        self.polls += 1
        self.last_poll, self.last_error = time.time(), None
        return jobs

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.poll()
            except SlurmError:
                pass  # said in _queue; nothing is read as ended while Slurm is silent
            except Exception:
                log.exception("slurm_poll_crashed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self._wake.wait()  # a period, or sooner when asked (tests, stop)
            self._wake.clear()

    def poke(self) -> None:
        self._wake.set()

    async def poll(self) -> None:
        """One squeue for every job; then each tracked job moves on from what it said."""
        if not self.tracked and self.last_error is None:
            return  # idle: nothing to ask (after a failure, asked again to clear it)
        jobs = {job.job_id: job for job in await self._queue()}
        now = time.monotonic()
        fenced = self._lease_until is not None and time.time() > self._lease_until
        for tracked in list(self.tracked.values()):
            job = jobs.get(tracked.job_id)
            if job is not None and tracked.live(job.state):
                await self._live(tracked, job, now, fenced)
            else:
                await self._ended(tracked, job, now)

    async def _live(self, tracked: Tracked, job: QueuedJob, now: float, fenced: bool) -> None:
        if job.state == "RUNNING" and tracked.running_since is None:
            tracked.running_since = now
        elif job.state == "PENDING" and tracked.running_since is not None:
            tracked.running_since = None  # requeued: its clock starts again when it runs
            tracked.restarts += 1
            log.info("slurm_requeued", key=tracked.key, job_id=tracked.job_id, reason=job.reason)
        tracked.state, tracked.reason, tracked.ended_since = job.state, job.reason, None
        if fenced and tracked.killed_by is None:
            await self._stop(tracked, "fenced")
        elif (
            tracked.timeout_s is not None and tracked.running_since is not None
            and now - tracked.running_since >= tracked.timeout_s and tracked.killed_by is None
        ):  # fmt: skip
            await self._stop(tracked, "timeout")

    async def _ended(self, tracked: Tracked, job: QueuedJob | None, now: float) -> None:
        if job is not None:
            tracked.state, tracked.reason = job.state, job.reason
        elif tracked.ended_since is None:
            tracked.state, tracked.reason = "GONE", "no longer in squeue"
        if tracked.ended_since is None:
            tracked.ended_since = now
        run_id, attempt = parse_attempt_key(tracked.key)
        if tracked.killed_by is None and tracked.state == "TIMEOUT":
            tracked.killed_by = "timeout"  # Slurm's --time backstop: a timeout all the same
        if tracked.state == "PREEMPTED" and tracked.killed_by is None:
            # not requeue-able: it did not fail, it was put off; lost, retried per its policy
            why = f"Slurm job {tracked.job_id} was preempted (requeue = false)"
            await self._deliver(tracked, UnreadableExit(key=tracked.key, why=why))
            return
        record = await self.read_exit(run_id, attempt)
        if record is None and now - tracked.ended_since < self.exit_grace_s:
            return  # the file may still be on its way from the compute node
        if record is None:
            record = await self._record_without_file(tracked, run_id, attempt)
        await self._deliver(tracked, record)

    async def _record_without_file(
        self, tracked: Tracked, run_id: str, attempt: int
    ) -> ExitRecord | UnreadableExit:
        why = (
            f"Slurm job {tracked.job_id} ended {tracked.state} ({tracked.reason}) "
            "without an exit file"
        )
        if tracked.killed_by is None:
            return UnreadableExit(key=tracked.key, why=why)
        # stopped by runyard, its script left no record (a requeue-able job does not): ours
        record = ExitRecord(
            key=tracked.key, pid=None, exit_code=None, signal=15, killed_by=tracked.killed_by,
            started_at=None, ended_at=time.time(),
        )  # fmt: skip
        path = self.paths(run_id).exit_file(attempt)
        with contextlib.suppress(OSError):  # the event tells a connected server anyway
            await asyncio.to_thread(
                write_exit_file, path, fastjson.dumps(record.to_dict()), fsync=False
            )
        return record

    async def _deliver(self, tracked: Tracked, record: ExitRecord | UnreadableExit) -> None:
        if self._events is None:
            return
        try:
            await self._events.exited(record)
        except Exception:
            log.exception("slurm_exit_not_recorded", key=tracked.key)
            return  # tracked still: the next poll tells it again
        self.tracked.pop(tracked.key, None)

    async def _stop(self, tracked: Tracked, reason: str) -> None:
        """TERM to the program now (through the batch shell), Slurm's kill after the grace."""
        tracked.killed_by = reason
        run_id, attempt = parse_attempt_key(tracked.key)
        try:  # durable before the signal: a restarted server still knows why it ended
            await asyncio.to_thread(
                write_job_file, _job_file(self.paths(run_id).root, attempt), tracked
            )
        except OSError as exc:
            log.warning("slurm_job_file_failed", key=tracked.key, error=str(exc))
        if tracked.state == "PENDING":
            await self.commands.cancel(tracked.job_id)
            return
        await self.commands.cancel(tracked.job_id, signal="TERM")
        self._kills.start(self._kill_later(tracked))

    async def _kill_later(self, tracked: Tracked) -> None:
        await asyncio.sleep(tracked.kill_grace_s)  # the grace is a time, not an event
        if tracked.key in self.tracked:
            with contextlib.suppress(SlurmError):
                await self.commands.cancel(tracked.job_id)

    def status(self) -> dict[str, object]:
        """For /v1/status: jobs in flight by Slurm state, and the last poll."""
        states: dict[str, int] = {}
        for tracked in self.tracked.values():
            states[tracked.state] = states.get(tracked.state, 0) + 1
        return {
            "in_flight": len(self.tracked), "by_state": states, "last_poll": self.last_poll,
            "last_error": self.last_error, "polls": self.polls,
            "squeue_calls": self.commands.calls.get("squeue", 0),
        }  # fmt: skip


_CONFORMS: type[Executor] = SlurmExecutor  # mypy proves it keeps the protocol


def _with_killed_by(record: ExitRecord, killed_by: str) -> ExitRecord:
    return replace(record, killed_by=killed_by)
