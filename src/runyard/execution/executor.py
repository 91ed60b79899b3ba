"""The local executor: prepares an attempt's workspace and asks the supervisor to run it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from runyard.execution import procinfo, workspace
from runyard.execution.environment import program_env
from runyard.execution.layout import RunPaths
from runyard.execution.protocol import ExitRecord
from runyard.execution.supervisor_client import SupervisorClient, SupervisorUnavailableError
from runyard.jobs.template import render
from runyard.models import attempt_key

ExitHandler = Callable[[ExitRecord], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Launch:
    """Everything needed to start one attempt."""

    run_id: str
    attempt: int
    command: list[str]
    params: dict[str, Any]
    workspace: str
    env: dict[str, str]
    timeout_s: float | None
    kill_grace_s: float
    limits: dict[str, Any] | None = None
    run_as: str | None = None


@dataclass(frozen=True, slots=True)
class Started:
    pid: int
    pgid: int
    start_time: float
    started_at: float


class LaunchError(Exception):
    pass


class LocalExecutor:
    def __init__(
        self,
        data_dir: Path,
        jobs_dir: Path,
        on_exit: ExitHandler,
        on_supervisor_lost: Callable[[], Awaitable[None]],
        *,
        fsync: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.jobs_dir = jobs_dir
        self._on_exit = on_exit
        self._client = SupervisorClient(data_dir, self._event, on_supervisor_lost, fsync=fsync)

    @property
    def healthy(self) -> bool:
        return self._client.connected

    async def start(self) -> None:
        await asyncio.to_thread(lambda: (self.data_dir / "runs").mkdir(parents=True, exist_ok=True))
        await self._client.connect()

    async def stop(self) -> None:
        """Disconnect; running programs stay with the supervisor."""
        await self._client.close()

    async def _event(self, msg: dict[str, Any]) -> None:
        if msg.get("op") == "exited":
            await self._on_exit(ExitRecord.from_dict(msg))

    def paths(self, run_id: str) -> RunPaths:
        return RunPaths.of(self.data_dir, run_id)

    async def launch(self, spec: Launch) -> Started | None:
        """Start the attempt. None when the program could not be started: its exit record
        (with the reason) arrives through `on_exit` like any other end."""
        paths = self.paths(spec.run_id)
        if spec.workspace != "empty" and not await asyncio.to_thread(paths.workspace.exists):
            try:
                await asyncio.to_thread(self._prepare, spec.workspace, paths)
            except (workspace.WorkspaceError, OSError) as exc:
                raise LaunchError(f"workspace: {exc}") from exc
        values = {
            **spec.params,
            "jobs_dir": str(self.jobs_dir),
            "workspace": str(paths.workspace),
            "run_id": spec.run_id,
            "attempt": spec.attempt,
        }
        env = program_env(run_id=spec.run_id, attempt=spec.attempt, paths=paths, job_env=spec.env)
        request = {
            "op": "spawn",
            "key": attempt_key(spec.run_id, spec.attempt),
            "argv": render(spec.command, values),
            "cwd": str(paths.workspace),
            "env": env,
            "log": str(paths.log(spec.attempt)),
            "exit": str(paths.exit_file(spec.attempt)),
            "mkdirs": [str(paths.workspace), str(paths.artifacts_dir)],
            "files": {str(paths.params_file): json.dumps(spec.params, indent=2) + "\n"},
            "timeout_s": spec.timeout_s,
            "kill_grace_s": spec.kill_grace_s,
            "limits": spec.limits or {},
            "run_as": spec.run_as,
            "progress": str(paths.progress_file(spec.attempt)),
        }
        reply = await self._client.request(request)  # SupervisorUnavailableError propagates
        if reply.get("ok"):
            return Started(reply["pid"], reply["pgid"], reply["start_time"], reply["started_at"])
        if reply.get("exited"):
            return None
        raise LaunchError(str(reply.get("error")))

    def _prepare(self, spec: str, paths: RunPaths) -> None:
        paths.root.mkdir(parents=True, exist_ok=True)
        workspace.prepare(spec, self.jobs_dir, paths.workspace)

    async def cancel(self, run_id: str, attempt: int, reason: str = "cancel") -> bool:
        """Ask the supervisor to stop an attempt: SIGTERM, grace, SIGKILL. False if unknown."""
        try:
            reply = await self._client.request(
                {"op": "signal", "key": attempt_key(run_id, attempt), "reason": reason}
            )
        except SupervisorUnavailableError:
            return False
        return bool(reply.get("ok"))

    async def running(self) -> dict[str, dict[str, Any]]:
        reply = await self._client.request({"op": "list"})
        return {a["key"]: a for a in reply.get("attempts", [])}

    async def read_exit(self, run_id: str, attempt: int) -> ExitRecord | None:
        return await asyncio.to_thread(read_exit_file, self.paths(run_id).exit_file(attempt))

    async def kill_leftovers(
        self, run_id: str, attempt: int, pid: int | None, start_time: float | None
    ) -> int:
        """Kill what is left of an attempt nobody supervises any more: its process group if
        (pid, start time) still name the same process (a reused pid is somebody else's), and
        any process carrying its attempt key in its environment. Returns how many died."""
        return await asyncio.to_thread(
            kill_leftovers, attempt_key(run_id, attempt), pid, start_time
        )

    async def remove_files(self, run_id: str) -> None:
        import shutil

        await asyncio.to_thread(shutil.rmtree, self.paths(run_id).root, True)


def read_exit_file(path: Path) -> ExitRecord | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ExitRecord.from_dict(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        # A corrupt exit file says the program ended but not how; treat as lost, not crash.
        return None


def kill_leftovers(key: str, pid: int | None, start_time: float | None) -> int:
    """Blocking: see LocalExecutor.kill_leftovers."""
    killed = 0
    if pid is not None and start_time is not None:
        with contextlib.suppress(OSError):
            if abs(procinfo.start_time(pid) - start_time) <= 0.01:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                    killed += 1
    needle = f"RUNYARD_ATTEMPT_KEY={key}".encode()
    for proc in psutil.process_iter():
        try:
            environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            with contextlib.suppress(psutil.Error):
                proc.kill()
                killed += 1
    return killed
