"""The tasks each peer runs: /bin/true as a subprocess, bare or with runyard's per-run work."""

from __future__ import annotations

import asyncio
import os
import subprocess
from typing import Any

from arq.connections import RedisSettings
from celery import Celery

from bench.fair_work import PROGRAM, fair_run, run_dir

celery_app = Celery(
    "bench", broker="redis://127.0.0.1:6379/11", backend="redis://127.0.0.1:6379/11"
)
celery_app.conf.update(worker_prefetch_multiplier=4, task_acks_late=False, result_expires=600)


@celery_app.task
def celery_true() -> int:
    return subprocess.run(["/bin/true"], check=True).returncode


@celery_app.task
def celery_fair(root: str, i: int) -> int:
    return fair_run(root, i)


async def arq_true(ctx: dict[str, Any]) -> int:
    # arq runs tasks on an event loop: the idiomatic subprocess is the asyncio one
    proc = await asyncio.create_subprocess_exec("/bin/true")
    return await proc.wait()


async def arq_fair(ctx: dict[str, Any], root: str, i: int) -> int:
    path = run_dir(root, i)
    with open(os.path.join(path, "log"), "wb") as log:  # noqa: ASYNC230  as the asyncio floor does
        proc = await asyncio.create_subprocess_exec(
            *PROGRAM, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=path
        )
        return await proc.wait()


class ArqWorker:
    functions = [arq_true, arq_fair]  # noqa: RUF012  arq reads class attributes
    redis_settings = RedisSettings(database=12)
    max_jobs = int(os.environ.get("BENCH_ARQ_MAX_JOBS", "8"))
    keep_result = 600
