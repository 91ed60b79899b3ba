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
from typing import Any

import structlog

from runyard.background import Background
from runyard.execution import inputs, workspace
from runyard.execution.base import (
    Executor,
    ExecutorEvents,
    ExecutorHealth,
    ExecutorUnavailableError,
    Launch,
    LaunchError,
    RunningAttempt,
    Started,
    check_wanted,
    preparation_failed,
)
from runyard.execution.environment import base_env
from runyard.execution.executor import read_exit_file
from runyard.execution.layout import RunPaths
from runyard.execution.protocol import ExitRecord, UnreadableExit
from runyard.execution.slurm.commands import (
    CALL_TIMEOUT_S,
    QueuedJob,
    SlurmCommands,
    SlurmError,
    SlurmUnavailableError,
)
from runyard.execution.slurm.follow import Follower, job_file
from runyard.execution.slurm.script import ScriptSpec, batch_script, sbatch_options
from runyard.execution.slurm.tracking import (
    LIVE,
    Tracked,
    job_name,
    key_of,
    names_attempt,
    read_job_file,
    write_job_file,
)
from runyard.execution.spawn_requests import spawn_request
from runyard.execution.spawning import prepare
from runyard.models import attempt_key, parse_attempt_key

log = structlog.get_logger(__name__)


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
        uploads_dir: Path | None = None,
    ) -> None:
        self.runs_dir = runs_dir
        self.uploads_dir = uploads_dir or runs_dir.parent / "uploads"
        self.jobs_dir = jobs_dir
        self.commands = commands
        self.server_id = server_id
        self.poll_s = poll_s
        self.max_in_flight = max_in_flight
        self.user = getpass.getuser()
        self.follower = Follower(commands, runs_dir, self.read_exit, exit_grace_s)
        self.tracked = self.follower.tracked  # by attempt key: submitted and not yet ended
        self.last_poll: float | None = None  # wall clock of the last squeue that answered
        self.last_error: str | None = None
        self.polls = 0
        self._events: ExecutorEvents | None = None
        self._base_env = base_env()
        self._poller = Background("slurm-poll")
        self._wake = asyncio.Event()
        self._stopped = True  # until start: nothing is known of Slurm
        self._adopted = False  # this server's jobs found again (after a restart)
        # jobs followed and no squeue answer for this long: readiness says so (a squeue may
        # take its time on a large cluster, up to its call's cut-off)
        self.squeue_late_s = max(2 * poll_s, CALL_TIMEOUT_S)
        self._submitting: set[str] = set()  # attempt keys whose sbatch has not answered yet

    # -- the protocol ---------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return not self._stopped and self.last_error is None

    async def start(self, events: ExecutorEvents) -> None:
        """Adopt this server's jobs Slurm still knows, then poll. Never raises: until the
        controller has answered, `running` raises (nothing is read as lost) and readiness says
        so; the poller keeps asking, and adopts at its first answer."""
        self._events = events
        self._stopped = False
        with contextlib.suppress(SlurmError):
            await self._adopt(await self._queue())
            await self.commands.accounting()  # probed once: what sacct may fill in later
        self._poller.start(self._poll_forever())

    async def reconnect(self) -> None:
        return None  # nothing to reconnect: every call is a command of its own

    async def stop(self) -> None:
        self._stopped = True
        await self._poller.stop()
        self.commands.close()

    async def health(self, timeout_s: float) -> ExecutorHealth:
        """The controller answers: the last poll did, recently, or `scontrol ping` does now
        (readiness asks often; the poller already asks every period)."""
        if self._stopped:
            raise ExecutorUnavailableError("the Slurm executor is stopped")
        age = None if self.last_poll is None else time.time() - self.last_poll
        if self.last_error is None and age is not None and age < 2 * self.poll_s:
            return ExecutorHealth()
        if self.tracked and age is not None and age > self.squeue_late_s:
            # jobs are followed by squeue alone, and it has not answered (hung, or failing
            # with a controller that pings): a ping said ready while nothing was followed
            raise ExecutorUnavailableError(
                f"squeue has not answered for {age:.0f} s; {len(self.tracked)} job(s) unfollowed"
            )
        try:
            async with asyncio.timeout(timeout_s):
                await self.commands.ping(timeout_s)
        except SlurmError as exc:
            raise ExecutorUnavailableError(f"the Slurm controller does not answer: {exc}") from exc
        except TimeoutError as exc:
            said = f"scontrol ping: no answer in {timeout_s:g} s"
            raise ExecutorUnavailableError(
                f"the Slurm controller does not answer ({said})"
            ) from exc
        if self.last_error is None and not self.tracked:
            self.last_poll = time.time()  # idle: an answer as good as a poll's, for the next ask
        return ExecutorHealth()

    async def hold_lease(self, token: str, until: float, grace_s: float, timeout_s: float) -> None:
        """Cluster mode: past `until` unrenewed, this server's jobs are cancelled (fenced)
        at the next poll, and no job is submitted."""
        self.follower.lease_until = until

    def paths(self, run_id: str) -> RunPaths:
        return RunPaths(self.runs_dir / run_id)

    def launch_now(self, spec: Launch) -> None:
        """Never: a submission to Slurm is awaited (sbatch) before anything is sent."""

    async def launch(self, spec: Launch) -> Started:
        key = attempt_key(spec.run_id, spec.attempt)
        if key in self.tracked:
            raise LaunchError(f"attempt {key} is already on Slurm")
        if spec.sandbox is not None:  # refused at job load; never run unsandboxed regardless
            raise LaunchError("the Slurm executor runs no sandbox (docs/slurm.md)")
        if len(self.tracked) >= self.max_in_flight:
            raise ExecutorUnavailableError(f"{len(self.tracked)} Slurm jobs in flight (the most)")
        until = self.follower.lease_until
        if until is not None and time.time() > until:
            raise ExecutorUnavailableError("this server's lease lapsed: nothing is submitted")
        paths = self.paths(spec.run_id)
        try:
            staged = await asyncio.to_thread(
                self._prepare, spec.workspace, paths, spec.inputs, spec.input_paths
            )
        except (workspace.WorkspaceError, OSError) as exc:
            raise preparation_failed(exc, "workspace") from exc
        req = spawn_request(
            spec, str(self.runs_dir), str(self.jobs_dir), self._base_env, staged=staged
        )
        slurm = spec.slurm or {}
        tracked = Tracked(
            key=key, job_id="", timeout_s=spec.timeout_s, kill_grace_s=spec.kill_grace_s,
            requeue=bool(slurm.get("requeue")),
        )  # fmt: skip
        script = batch_script(ScriptSpec(
            key=key, argv=req.argv, cwd=req.cwd, env=req.env, exit_path=req.exit,
            progress_path=req.progress or "", requeue=tracked.requeue,
        ))  # fmt: skip
        try:
            await asyncio.to_thread(prepare, req)
        except OSError as exc:
            raise preparation_failed(exc, "workspace") from exc
        check_wanted(spec)
        name = job_name(self.server_id, key)
        options = sbatch_options(
            name=name, log=req.log, cwd=req.cwd, slurm=slurm, resources=spec.resources or {},
            timeout_s=spec.timeout_s, kill_grace_s=spec.kill_grace_s,
        )  # fmt: skip
        self._submitting.add(key)
        try:
            tracked.job_id = await self.commands.submit(options, script, name=name, user=self.user)
        except SlurmUnavailableError as exc:
            raise ExecutorUnavailableError(str(exc)) from exc
        except SlurmError as exc:
            raise LaunchError(f"Slurm refused the job: {exc.message}") from exc
        finally:
            self._submitting.discard(key)
        self.tracked[key] = tracked
        try:
            await asyncio.to_thread(write_job_file, job_file(paths.root, spec.attempt), tracked)
        except OSError as exc:  # the job name still finds it after a restart
            log.warning("slurm_job_file_failed", key=key, error=str(exc))
        log.info("slurm_submitted", key=key, job_id=tracked.job_id)
        return Started(int(tracked.job_id), 0, 0.0, time.time())

    def _prepare(
        self,
        spec: str,
        paths: RunPaths,
        files: dict[str, str] | None,
        where: dict[str, str] | None = None,
    ) -> dict[str, dict[str, Any]] | None:
        """Blocking: the run's workspace (once per run) and its file inputs, staged into the
        shared run directory (copied when the uploads are on another filesystem)."""
        if spec != "empty" and not paths.workspace.exists():
            paths.root.mkdir(parents=True, exist_ok=True)
            workspace.prepare(spec, self.jobs_dir, paths.workspace)
        return inputs.stage(self.uploads_dir, paths.workspace, files, where) if files else None

    async def cancel(self, run_id: str, attempt: int, reason: str = "cancel") -> bool:
        """False if it is not ours or has already ended; ExecutorUnavailableError if Slurm
        did not take the cancel (it is asked again at every poll meanwhile)."""
        tracked = self.tracked.get(attempt_key(run_id, attempt))
        if tracked is None:
            return False
        try:
            if tracked.ended_since is not None and await self.follower.alive_as(tracked) is None:
                return False  # not listed, and the controller has it ended: not ours to stop
            await self.follower.stop(tracked, reason)
        except SlurmError as exc:
            raise ExecutorUnavailableError(f"Slurm did not take the cancel: {exc}") from exc
        return True

    async def running(self) -> dict[str, RunningAttempt]:
        if self._stopped:
            raise ExecutorUnavailableError("the Slurm executor is stopped")
        if self.last_error is not None or not self._adopted:
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
                read_job_file, job_file(self.paths(run_id).root, attempt), key
            )
            if tracked is not None and tracked.killed_by is not None:
                record = replace(record, killed_by=tracked.killed_by)
        return record

    async def owns(self, run_id: str, attempt: int) -> bool:
        """Whether this attempt was placed on Slurm (by this server or another, now or
        before): its job file is in the shared run directory."""
        if attempt_key(run_id, attempt) in self.tracked:
            return True
        return await asyncio.to_thread(Path(job_file(self.paths(run_id).root, attempt)).exists)

    async def still_runs(
        self, run_id: str, attempt: int, pid: int | None, start_time: float | None
    ) -> bool:
        """Whether Slurm still has a job it names as the attempt's in a state it may run in
        (by its name, which runyard gave it: the job file lies where its program may write).
        A job that ended ended all its processes with it."""
        key = attempt_key(run_id, attempt)
        tracked = self.tracked.get(key)
        if tracked is not None:
            return tracked.ended_since is None
        path = job_file(self.paths(run_id).root, attempt)
        found = await asyncio.to_thread(read_job_file, path, key)
        name = None if found is None else await self.follower.alive_as(found)
        if found is not None and name is not None and names_attempt(name, key):
            if key_of(name, self.server_id) == key and self._adopted:
                # this server's, running, and not listed (squeue's partial answer at a start
                # made it lost, cancelled and retried): followed from now on
                self.tracked[key] = found
                log.warning("slurm_adopted", key=key, job_id=found.job_id, listed=False)
            return True
        jobs = await self.commands.queue(self.user)
        # a preempted job may be requeued: as good as running until Slurm says otherwise
        return any(
            names_attempt(j.name, key) and (j.state in LIVE or j.state == "PREEMPTED") for j in jobs
        )

    async def kill_leftovers(
        self, run_id: str, attempt: int, pid: int | None, start_time: float | None
    ) -> int:
        """Cancel the attempt's job, if Slurm still has one that is runyard's for it (placed
        by this server or, reaped in a cluster, by another)."""
        key = attempt_key(run_id, attempt)
        found = await asyncio.to_thread(
            read_job_file, job_file(self.paths(run_id).root, attempt), key
        )
        if found is None:
            return 0
        # the job file lies in the run's directory, where its program may write: cancel only
        # a job Slurm itself names as this attempt's (never somebody else's job id)
        jobs = await self.commands.queue(self.user)
        if not any(j.job_id == found.job_id and names_attempt(j.name, key) for j in jobs):
            return 0
        await self.commands.cancel(found.job_id)
        return 1

    # -- following the jobs ----------------------------------------------------------------

    async def _adopt(self, jobs: list[QueuedJob]) -> None:
        for job in jobs:
            key = key_of(job.name, self.server_id)
            if key is None or key in self.tracked:
                continue
            run_id, attempt = parse_attempt_key(key)
            found = await asyncio.to_thread(
                read_job_file, job_file(self.paths(run_id).root, attempt), key, job.job_id
            )
            self.tracked[key] = found or Tracked(key, job.job_id, None, 10.0, False)
            log.info("slurm_adopted", key=key, job_id=job.job_id, state=job.state)
        self._adopted = True

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
        if self._adopted and not self.tracked and self.last_error is None:
            return  # idle: nothing to ask (after a failure, asked again to clear it)
        listed = await self._queue()
        if not self._adopted:
            await self._adopt(listed)
        await self._cancel_orphans(listed)
        if self._events is not None:
            jobs = {job.job_id: job for job in listed}
            await self.follower.settle(jobs, self._events.exited)

    async def _cancel_orphans(self, listed: list[QueuedJob]) -> None:
        """A job named for this server that nobody follows (a submission Slurm took although
        sbatch seemed to fail, so its run was re-queued) must not run beside its retry."""
        for job in listed:
            key = key_of(job.name, self.server_id)
            if key is None or key in self.tracked or key in self._submitting:
                continue
            if job.state in LIVE:
                log.warning("slurm_orphan_cancelled", key=key, job_id=job.job_id)
                with contextlib.suppress(SlurmError):
                    await self.commands.cancel(job.job_id)

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
