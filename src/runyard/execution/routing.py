"""More than one executor behind the one Executor the services see: each job says which runs
its attempts (`executor = "local" | "slurm"`); everything about an attempt after its launch
goes to the executor that holds it. Run directories have one root for all of them (the
shared directory when Slurm is configured), so a run's files are found without asking whom.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import replace

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
from runyard.execution.executor import LocalExecutor
from runyard.execution.layout import RunPaths
from runyard.execution.protocol import ExitRecord, UnreadableExit
from runyard.execution.slurm.executor import SlurmExecutor


class RoutedExecutor:
    """The local executor (the supervisor: its connection is this executor's `healthy` and
    `lost`) and the Slurm executor."""

    def __init__(self, local: LocalExecutor, slurm: SlurmExecutor) -> None:
        self.local = local
        self.slurm = slurm

    @property
    def healthy(self) -> bool:
        return self.local.healthy

    async def start(self, events: ExecutorEvents) -> None:
        try:
            await self.local.start(events)
        finally:  # a supervisor out of reach is reconnected later; Slurm's start is now
            await self.slurm.start(events)

    async def reconnect(self) -> None:
        await self.local.reconnect()

    async def stop(self) -> None:
        await asyncio.gather(self.local.stop(), self.slurm.stop())

    async def health(self, timeout_s: float) -> ExecutorHealth:
        """The supervisor answers (else it raises); a silent Slurm controller is a failing
        check of its own, so readiness names it."""
        health = await self.local.health(timeout_s)
        try:
            await self.slurm.health(timeout_s)
        except ExecutorUnavailableError as exc:
            return replace(health, write_errors={**health.write_errors, "slurm": str(exc)})
        return health

    async def hold_lease(self, token: str, until: float, grace_s: float, timeout_s: float) -> None:
        await self.local.hold_lease(token, until, grace_s, timeout_s)
        await self.slurm.hold_lease(token, until, grace_s, timeout_s)

    def paths(self, run_id: str) -> RunPaths:
        return self.local.paths(run_id)

    async def launch(self, spec: Launch) -> Started | None:
        if spec.executor == "slurm":
            return await self.slurm.launch(spec)
        if spec.executor != "local":
            raise LaunchError(f"no executor {spec.executor!r} on this server")
        return await self.local.launch(spec)

    def launch_now(self, spec: Launch) -> Awaitable[Started | None] | None:
        return self.local.launch_now(spec) if spec.executor == "local" else None

    async def _of(self, run_id: str, attempt: int) -> Executor:
        return self.slurm if await self.slurm.owns(run_id, attempt) else self.local

    async def cancel(self, run_id: str, attempt: int, reason: str = "cancel") -> bool:
        return await (await self._of(run_id, attempt)).cancel(run_id, attempt, reason)

    async def running(self) -> dict[str, RunningAttempt]:
        # both must answer: an attempt missing from a list that could not be had is not lost
        local, slurm = await asyncio.gather(self.local.running(), self.slurm.running())
        return {**local, **slurm}

    async def read_exit(self, run_id: str, attempt: int) -> ExitRecord | UnreadableExit | None:
        return await (await self._of(run_id, attempt)).read_exit(run_id, attempt)

    async def still_runs(
        self, run_id: str, attempt: int, pid: int | None, start_time: float | None
    ) -> bool:
        return await (await self._of(run_id, attempt)).still_runs(run_id, attempt, pid, start_time)

    async def kill_leftovers(
        self, run_id: str, attempt: int, pid: int | None, start_time: float | None
    ) -> int:
        return await (await self._of(run_id, attempt)).kill_leftovers(
            run_id, attempt, pid, start_time
        )

    def status(self) -> dict[str, object]:
        return {"slurm": self.slurm.status()}


_CONFORMS: type[Executor] = RoutedExecutor  # mypy proves it keeps the protocol
