"""GET /v1/status: what an operator needs to see, without secrets."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from typing import Any

from fastapi import APIRouter

from runyard import __version__
from runyard.api.deps import RegistryDep, ServerState, ServerStateDep, SettingsDep
from runyard.api.security import ADMIN
from runyard.schemas import problem_responses

router = APIRouter(tags=["observability"], responses=problem_responses(401, 403))


@router.get("/v1/status", dependencies=[ADMIN])
async def status(s: SettingsDep, registry: RegistryDep, state: ServerStateDep) -> dict[str, Any]:
    snap = await registry.snapshot()
    return {
        "version": __version__,
        "pid": os.getpid(),
        "uptime_s": round(time.time() - state.started_at, 3),
        "config": {
            "host": s.host,
            "port": s.port,
            "capacity": s.capacity,
            "max_queue": s.max_queue,
            "jobs_dir": str(s.jobs_dir),
            "data_dir": str(s.data_dir),
            "fsync": s.fsync,
            "drain": s.drain,
            "shutdown_timeout_s": s.shutdown_timeout_s,
            "min_free_mb": s.min_free_mb,
            "heartbeat_s": s.heartbeat_s,
        },
        "store": {
            "kind": state.store_kind,
            # signs that the store lost writes the files outlived (services/file_audit.py)
            **({"file_audit": state.file_audit} if state.file_audit is not None else {}),
        },
        "executor": {
            "kind": "local" if state.slurm is None else "local+slurm",
            "supervisor_connected": state.supervisor_connected,
            "active": state.active,
            "running_by_job": state.running_by_job,
            **({"slurm": state.slurm} if state.slurm is not None else {}),
        },
        "streams": {"watchers": state.watchers, "notify": state.notify},
        "jobs": {"declared": sorted(snap.jobs), "load_errors": snap.errors},
        "draining": state.draining,
        "resources": resources(state),
    }


# Pools keep their threads once started (asyncio's default executor, the listing pool):
# counted apart, so a thread that outlives its request stands out.
POOLED = (
    "asyncio_", "uvloop_", "runyard-artifacts", "runyard-sqlite", "ThreadPoolExecutor-",
    "AnyIO worker thread",  # Starlette's file responses; idle ones end by themselves
)  # fmt: skip


def _kind(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    return getattr(coro, "__qualname__", None) or type(coro).__name__


def resources(state: ServerState) -> dict[str, Any]:
    """What requests take and must give back, for operators and the tests' leak check."""
    tasks = asyncio.all_tasks()
    threads = threading.enumerate()
    pooled = [t for t in threads if t.name.startswith(POOLED)]
    return {
        "asyncio_tasks": len(tasks),
        "task_kinds": dict(Counter(_kind(t) for t in tasks)),
        "threads": len(threads),
        "pooled_threads": len(pooled),
        "other_threads": sorted(t.name for t in threads if t not in pooled),
        "tailers": state.tailers,
        "watchers": state.watchers,
    }
