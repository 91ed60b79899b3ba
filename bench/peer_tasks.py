"""The task each peer runs: /bin/true as a subprocess."""

from __future__ import annotations

import asyncio
import os
import subprocess
from typing import Any

from arq.connections import RedisSettings
from celery import Celery

celery_app = Celery(
    "bench", broker="redis://127.0.0.1:6379/11", backend="redis://127.0.0.1:6379/11"
)
celery_app.conf.update(worker_prefetch_multiplier=4, task_acks_late=False, result_expires=600)


@celery_app.task
def celery_true() -> int:
    return subprocess.run(["/bin/true"], check=True).returncode


async def arq_true(ctx: dict[str, Any]) -> int:
    # arq runs tasks on an event loop: the idiomatic subprocess is the asyncio one
    proc = await asyncio.create_subprocess_exec("/bin/true")
    return await proc.wait()


class ArqWorker:
    functions = [arq_true]  # noqa: RUF012  arq reads class attributes
    redis_settings = RedisSettings(database=12)
    max_jobs = int(os.environ.get("BENCH_ARQ_MAX_JOBS", "8"))
    keep_result = 600
