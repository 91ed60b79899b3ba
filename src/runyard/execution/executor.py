"""The local executor: prepares an attempt's workspace and asks the supervisor to run it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Collection
from pathlib import Path
from typing import Any

import psutil
import structlog

from runyard.execution import inputs, procinfo, workspace
from runyard.execution.base import (
    Executor,
    ExecutorEvents,
    ExecutorHealth,
    ExecutorHeldError,
    ExitHandler,
    Launch,
    LaunchError,
    LossHandler,
    RunningAttempt,
    ShortageError,
    Started,
    check_wanted,
    preparation_failed,
)
from runyard.execution.environment import base_env
from runyard.execution.kills import settled_environs
from runyard.execution.late_spawns import LateSpawns
from runyard.execution.layout import RunPaths
from runyard.execution.protocol import (
    KEY_PATTERN,
    MAX_EXIT_FILE,
    BadExitRecordError,
    ExitRecord,
    SpawnRequest,
    UnreadableExit,
)
from runyard.execution.shortages import LastShortage
from runyard.execution.spawn_requests import spawn_request
from runyard.execution.supervisor_client import (
    STOPPED_GRACE_S,
    Sent,
    SupervisorClient,
    SupervisorTimeoutError,
    SupervisorUnavailableError,
)
from runyard.models import attempt_key, parse_attempt_key
from runyard.regular_files import open_regular

log = structlog.get_logger(__name__)

SAME_START_S = 0.01  # one clock tick: /proc gives a process's start time in ticks

__all__ = ["Launch", "LaunchError", "LocalExecutor", "Started"]  # re-exported for services


class LocalExecutor:
    """The Executor (base.py) of one server: a supervisor process per data directory runs
    the programs and outlives the server; exit events come over its socket."""

    def __init__(
        self,
        data_dir: Path,
        jobs_dir: Path,
        on_exit: ExitHandler | None = None,
        on_supervisor_lost: LossHandler | None = None,
        *,
        fsync: bool = False,
        request_timeout_s: float = 10.0,
        stopped_grace_s: float = STOPPED_GRACE_S,
        runs_dir: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.jobs_dir = jobs_dir
        self._jobs_dir_str = str(jobs_dir)
        # the runs' directories: DATA_DIR/runs, or a directory Slurm's nodes see too
        self.runs_dir = runs_dir or data_dir / "runs"
        self.uploads_dir = data_dir / "uploads"  # services/uploads.py keeps them there
        self._runs_dir = str(self.runs_dir)
        self._base_env = base_env()  # the server's environment does not change under it
        # what a sandboxed program never sees (the runs directory may be Slurm's shared one)
        self._hidden = tuple(dict.fromkeys(map(str, (data_dir, self.runs_dir, jobs_dir))))
        # Given here (older wiring) or to `start` (the protocol's): both end up in _events.
        self._events: ExecutorEvents | None = None
        if on_exit is not None and on_supervisor_lost is not None:
            self._events = ExecutorEvents(on_exit, on_supervisor_lost)
        self._client = SupervisorClient(
            data_dir, self._event, self._lost, fsync=fsync, timeout_s=request_timeout_s,
            stopped_grace_s=stopped_grace_s,
        )  # fmt: skip
        self._late = LateSpawns(self._client, kill_by_keys)
        self._lease: dict[str, Any] | None = None  # cluster mode: see hold_lease
        # a preparation of the server's own (a copy, a clone, inputs) refused for want of room
        self._short = LastShortage()

    @property
    def healthy(self) -> bool:
        return self._client.connected

    async def ping(self, timeout_s: float) -> dict[str, Any]:
        """The supervisor answers (SupervisorUnavailableError if not): its failing writes."""
        return await self._client.ping(timeout_s)

    async def health(self, timeout_s: float) -> ExecutorHealth:
        try:
            reply = await self._client.ping(timeout_s)
        except SupervisorTimeoutError:
            await asyncio.to_thread(self._client.continue_if_stopped)
            raise
        if not reply.get("ok"):
            if "KeyError" in str(reply.get("error")):
                return ExecutorHealth()  # an older supervisor without `ping`: alive
            raise SupervisorUnavailableError(f"the supervisor refused a ping: {reply.get('error')}")
        errors = {str(point): str(why) for point, why in (reply.get("write_errors") or {}).items()}
        return ExecutorHealth({**self._short.shown("workspace"), **errors})

    async def start(self, events: ExecutorEvents | None = None) -> None:
        if events is not None:
            self._events = events
        if self._events is None:
            raise TypeError("LocalExecutor.start needs the events it reports to")
        await asyncio.to_thread(lambda: self.runs_dir.mkdir(parents=True, exist_ok=True))
        await self._client.connect()
        await self._tell_lease(5.0)  # a new supervisor must know the lease before any spawn

    async def reconnect(self) -> None:
        await self.start()

    async def _lost(self) -> None:
        await self._late.lost()  # before anything of the lost supervisor's may be retried
        if self._events is not None:
            await self._events.lost()

    async def hold_lease(self, token: str, until: float, grace_s: float, timeout_s: float) -> None:
        """Cluster mode: this server's lease `token` is valid until `until` (wall clock). The
        supervisor stops the programs held under it if it lapses unrenewed, with `grace_s`
        between SIGTERM and SIGKILL (self-fencing: execution/lease_watch.py). Remembered, told
        again after every (re)connect, and named by every spawn."""
        self._lease = {"token": token, "until": until, "grace_s": grace_s}
        await self._tell_lease(timeout_s)

    async def _tell_lease(self, timeout_s: float) -> None:
        if self._lease is None or not self._client.connected:
            return
        try:
            await self._client.request({"op": "lease", **self._lease}, timeout_s)
        except SupervisorUnavailableError as exc:
            # it learns the lease with the next renewal or spawn; until then it keeps the last
            log.warning("lease_not_told", error=str(exc))

    async def stop(self) -> None:
        """Disconnect; running programs stay with the supervisor (but what a spawn given up
        on may have started: late_spawns.py)."""
        await self._late.stop()
        await self._client.close()

    async def _event(self, msg: dict[str, Any]) -> None:
        if msg.get("op") != "exited":
            return
        try:
            record: ExitRecord | UnreadableExit | None = ExitRecord.parse(msg)
        except BadExitRecordError as exc:
            record = await self._bad_event(msg, str(exc))
        if record is None:
            return
        self._late.ended(record.key)
        if self._events is not None:
            await self._events.exited(record)

    async def _bad_event(self, msg: dict[str, Any], why: str) -> ExitRecord | UnreadableExit | None:
        """An exit event that breaks the schema: the exit file, the durable truth, decides.
        If the event does not even name a well-formed attempt, nobody can be told: logged (a
        later reconcile settles the attempt from its file)."""
        key = msg.get("key")
        log.error("bad_exit_event", key=str(key)[:80], error=why)
        if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
            return None
        run_id, number = parse_attempt_key(key)
        found = await self.read_exit(run_id, number)
        if found is None:
            return UnreadableExit(key=key, why=f"unreadable exit event ({why}) and no exit file")
        return found

    def paths(self, run_id: str) -> RunPaths:
        return RunPaths(self.runs_dir / run_id)

    async def launch(self, spec: Launch) -> Started | None:
        """Start the attempt. None when the program could not be started: its exit record
        (with the reason) arrives through `events.exited` like any other end."""
        if spec.executor != "local":
            raise LaunchError(
                f"this server runs no {spec.executor!r} executor (docs/slurm.md: slurm_shared_dir)"
            )
        if spec.workspace != "empty" and not await asyncio.to_thread(
            (paths := self.paths(spec.run_id)).workspace.exists
        ):
            try:
                await asyncio.to_thread(self._prepare, spec.workspace, paths)
            except (workspace.WorkspaceError, OSError) as exc:
                raise self._failed(preparation_failed(exc, "workspace")) from exc
        staged = None
        if spec.inputs:
            try:
                staged = await asyncio.to_thread(
                    inputs.stage, self.uploads_dir, self.paths(spec.run_id).workspace,
                    spec.inputs, spec.input_paths, link=spec.run_as is not None,
                )  # fmt: skip
            except (workspace.WorkspaceError, OSError) as exc:
                raise self._failed(preparation_failed(exc, "inputs")) from exc
        self._short.succeeded()
        check_wanted(spec)
        # SupervisorUnavailableError propagates
        request = self._spawn_request(spec, staged)
        return await self._started(self._client.send(request.to_message()), request.key)

    def _failed(self, error: LaunchError | ShortageError) -> LaunchError | ShortageError:
        if isinstance(error, ShortageError):
            self._short.failed(str(error))
        return error

    def launch_now(self, spec: Launch) -> Awaitable[Started | None] | None:
        """A plain local run (an empty workspace, no inputs) needs no await before its spawn
        request: it is written now, in the caller's step."""
        if spec.executor != "local" or spec.workspace != "empty" or spec.inputs:
            return None
        request = self._spawn_request(spec)
        return self._started(self._client.send(request.to_message()), request.key)

    async def _started(self, sent: Sent, key: str) -> Started | None:
        try:
            reply = await self._client.reply(sent)
        except SupervisorTimeoutError:
            if self._client.connected:
                self._late.given_up(sent, key)  # its answer may still come
            else:
                await self._late.went_away(key)
            raise
        except SupervisorUnavailableError:
            await self._late.went_away(key)  # it may have started the program first
            raise
        return self._outcome(reply)

    @staticmethod
    def _outcome(reply: dict[str, Any]) -> Started | None:
        if reply.get("ok"):
            if reply.get("set_aside"):  # the store had forgotten an attempt of that number
                log.warning("stale_attempt_files_set_aside", files=reply["set_aside"][:3])
            return Started(reply["pid"], reply["pgid"], reply["start_time"], reply["started_at"])
        if reply.get("exited"):
            return None
        if reply.get("shortage"):  # nothing started, for want of room: back to the queue
            raise ShortageError(str(reply.get("error")))
        if reply.get("held"):
            raise ExecutorHeldError(f"refused: {reply['error']}")
        if reply.get("requeue") or str(reply.get("error")).startswith("LeaseLapsedError"):
            # read late, another attempt of the run being stopped (late_spawns.py), or our
            # lease lapsed: not a failure of the run; it goes back to the queue
            raise SupervisorUnavailableError(f"refused: {reply['error']}")
        raise LaunchError(str(reply.get("error")))

    def _spawn_request(
        self, spec: Launch, staged: dict[str, dict[str, Any]] | None = None
    ) -> SpawnRequest:
        return spawn_request(
            spec, self._runs_dir, self._jobs_dir_str, self._base_env, self._lease, staged,
            self._hidden,
        )  # fmt: skip

    def _prepare(self, spec: str, paths: RunPaths) -> None:
        paths.root.mkdir(parents=True, exist_ok=True)
        workspace.prepare(spec, self.jobs_dir, paths.workspace)

    async def cancel(self, run_id: str, attempt: int, reason: str = "cancel") -> bool:
        """Ask the supervisor to stop an attempt: SIGTERM, grace, SIGKILL. False if unknown."""
        try:
            reply = await self._client.request(
                {"op": "signal", "key": attempt_key(run_id, attempt), "reason": reason}
            )
        except SupervisorTimeoutError:
            raise  # connected but silent: the caller must hear it (503), not a quiet False
        except SupervisorUnavailableError:
            return False
        return bool(reply.get("ok"))

    async def running(self) -> dict[str, RunningAttempt]:
        reply = await self._client.request({"op": "list"})
        return {a["key"]: _running(a) for a in reply.get("attempts", [])}

    async def read_exit(self, run_id: str, attempt: int) -> ExitRecord | UnreadableExit | None:
        """The attempt's exit record; None while it has none (its program has not ended, or
        the supervisor could not write it)."""
        path = self.paths(run_id).exit_file(attempt)
        return await asyncio.to_thread(read_exit_file, path, attempt_key(run_id, attempt))

    async def still_runs(
        self, run_id: str, attempt: int, pid: int | None, start_time: float | None
    ) -> bool:
        """Whether the process the supervisor spawned for the attempt is still there: `pid`
        with its start time (a reused pid is somebody else's), one read of /proc. With no
        start recorded (the server stopped before it wrote it, or the store refused it): any
        process carrying the attempt's key in its environment, its program or what it left,
        so that an exit file such a program wrote is not believed (a scan of /proc). In a
        thread, as every file read of the server's."""
        if pid is None:
            key = attempt_key(run_id, attempt)
            return await asyncio.to_thread(lambda: bool(_carrying((key,))))
        return await asyncio.to_thread(same_process, pid, start_time)

    async def kill_leftovers(
        self, run_id: str, attempt: int, pid: int | None, start_time: float | None
    ) -> int:
        """Kill what is left of an attempt nobody supervises any more: its process group if
        (pid, start time) still name the same process (a reused pid is somebody else's), and
        any process carrying its attempt key in its environment. Returns how many died."""
        return await asyncio.to_thread(
            kill_leftovers, attempt_key(run_id, attempt), pid, start_time
        )


_CONFORMS: type[Executor] = LocalExecutor  # mypy proves LocalExecutor keeps the protocol


def _running(listed: dict[str, Any]) -> RunningAttempt:
    return RunningAttempt(
        key=str(listed["key"]),
        pid=listed.get("pid"),
        start_time=listed.get("start_time"),
        started_at=listed.get("started_at"),
        ended=bool(listed.get("ended", False)),
    )


def read_exit_file(path: Path, key: str) -> ExitRecord | UnreadableExit | None:
    """Blocking: attempt `key`'s exit file, parsed strictly. A file that is there but cannot
    be read or does not follow the schema says the program ended but not how: the attempt is
    lost, with that reason, and nothing else is touched (whatever key the file names)."""
    try:
        with os.fdopen(open_regular(path)[0], "rb") as f:  # a FIFO there must not block us
            raw = f.read(MAX_EXIT_FILE + 1)  # bounded: a huge file is damage, not a record
        return ExitRecord.from_file(raw, key)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return UnreadableExit(key=key, why=f"unreadable exit file ({exc.strerror or exc})")
    except BadExitRecordError as exc:
        return UnreadableExit(key=key, why=f"unreadable exit file ({exc})")


def same_process(pid: int | None, start_time: float | None) -> bool:
    """Whether `pid` is still the process that started at `start_time` (as procinfo reads it,
    in clock ticks); never a pid alone, which the kernel hands out again. A zombie nobody
    reaped yet still is: it has ended, but nobody has recorded how."""
    if pid is None or start_time is None:
        return False
    try:
        return abs(procinfo.start_time(pid) - start_time) <= SAME_START_S
    except OSError:
        return False


def kill_leftovers(key: str, pid: int | None, start_time: float | None) -> int:
    """Blocking: see LocalExecutor.kill_leftovers."""
    killed = 0
    if pid is not None and same_process(pid, start_time):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
            killed += 1
    return killed + kill_by_keys((key,))


def kill_by_keys(keys: Collection[str]) -> int:
    """Blocking: SIGKILL every process whose environment names one of these attempts (one
    scan of /proc for them all). Returns how many."""
    killed = 0
    for proc in _carrying(keys):
        with contextlib.suppress(psutil.Error):
            proc.kill()
            killed += 1
    return killed


def _carrying(keys: Collection[str]) -> list[psutil.Process]:
    """Blocking: every process whose environment names one of these attempts (one scan)."""
    needles = {f"RUNYARD_ATTEMPT_KEY={key}".encode() for key in keys}
    procs = {proc.pid: proc for proc in psutil.process_iter()}
    return [
        procs[pid] for pid, environ in settled_environs(procs)
        if not needles.isdisjoint(environ.split(b"\0"))
    ]  # fmt: skip
