"""The same work on Celery, arq and RQ: N tasks that each run /bin/true, C at a time.

Each peer uses the machine's Redis (its own database number, flushed first) and runs as it is
normally deployed: a Celery prefork worker, an arq worker, an RQ worker pool.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import redis

from bench.common import REPO

REDIS = "redis://127.0.0.1:6379"
DB = {"celery": 11, "arq": 12, "rq": 13}


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def _flush(db: int) -> None:
    redis.Redis.from_url(f"{REDIS}/{db}").flushdb()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def celery_rate(n: int, c: int, log: Path) -> float:
    from bench.peer_tasks import celery_app, celery_true

    _flush(DB["celery"])
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench.peer_tasks:celery_app", "worker",
         "--pool=prefork", f"--concurrency={c}", "--loglevel=WARNING", "--without-gossip",
         "--without-mingle", "--without-heartbeat"],
        env=_env(), stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not celery_app.control.ping(timeout=0.5):
            if time.monotonic() > deadline:
                raise RuntimeError("celery worker did not start")
        t = time.perf_counter()
        results = [celery_true.delay() for _ in range(n)]
        for r in results:
            r.get(timeout=300)
        return n / (time.perf_counter() - t)
    finally:
        _stop(worker)


async def _arq_enqueue_and_wait(n: int) -> float:
    from arq import create_pool
    from arq.connections import RedisSettings

    pool = await create_pool(RedisSettings(database=DB["arq"]))
    warm = await pool.enqueue_job("arq_true")  # answered once the worker is up
    assert warm is not None
    await warm.result(timeout=60, poll_delay=0.05)
    t = time.perf_counter()
    jobs = [await pool.enqueue_job("arq_true") for _ in range(n)]
    for job in jobs:
        assert job is not None
        await job.result(timeout=300, poll_delay=0.05)
    rate = n / (time.perf_counter() - t)
    await pool.aclose()
    return rate


def arq_rate(n: int, c: int, log: Path) -> float:
    _flush(DB["arq"])
    worker = subprocess.Popen(
        [sys.executable, "-m", "arq", "bench.peer_tasks.ArqWorker"],
        env=_env(BENCH_ARQ_MAX_JOBS=str(c)), stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        return asyncio.run(_arq_enqueue_and_wait(n))
    finally:
        _stop(worker)


def rq_rate(n: int, c: int, log: Path) -> float:
    from rq import Queue

    from bench.rq_task import rq_true

    _flush(DB["rq"])
    conn = redis.Redis.from_url(f"{REDIS}/{DB['rq']}")
    queue = Queue("bench", connection=conn)
    pool = subprocess.Popen(
        [sys.executable, "-m", "rq.cli", "worker-pool", "bench", "-n", str(c), "--url",
         f"{REDIS}/{DB['rq']}", "--logging-level", "WARNING"],
        env=_env(), stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        warm = queue.enqueue(rq_true)  # finished once the pool is up
        while warm.get_status(refresh=True) != "finished":
            time.sleep(0.05)
        t = time.perf_counter()
        jobs = [queue.enqueue(rq_true) for _ in range(n)]
        deadline = time.monotonic() + 600
        pending = {j.id for j in jobs}
        while pending:
            if time.monotonic() > deadline:
                raise RuntimeError("rq did not finish")
            done = queue.finished_job_registry.get_job_ids()
            pending -= set(done)
            time.sleep(0.05)
        return n / (time.perf_counter() - t)
    finally:
        _stop(pool)
