"""The same work on Celery, arq and RQ: N tasks that each run /bin/true, C at a time, bare (a
subprocess and nothing else) and fair (runyard's per-run work: a fresh directory, the output to
a log file in it, a new session), each with the CPU every process spent per run.

Each peer uses the machine's Redis (its own database number, flushed first) and runs as it is
normally deployed: a Celery prefork worker, an arq worker, an RQ worker pool. One worker serves
both variants (and Celery's single-task latency), measured one after the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import redis

from bench.common import REPO, CpuMeter, pct, process_tree

# Given Celery's single task (`delay().get()`), its p50s and runyard's, taken in turns: per
# system ("celery", "runyard"), interleave.alternate's figures
SideBySide = Callable[[Callable[[], object]], dict[str, dict[str, float]]]

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


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Celery's AsyncResult unsubscribes in `__del__`; collected by the cyclic GC while redis-py
    holds the PubSub's lock (inside its own command), it waits on that lock forever. With the
    collector off, results die at known points, and what cycles remain are collected between
    phases, outside any Redis command."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def _measured(worker: subprocess.Popen[bytes], n: int, body: Callable[[], None]) -> dict[str, Any]:
    """Run `body` (n tasks, enqueued and awaited) under a CPU meter: runs/s and ms per run."""
    meter = CpuMeter({"worker": process_tree(worker.pid)}, redis=True).start()
    t = time.perf_counter()
    with _no_cyclic_gc():
        body()
    rate = n / (time.perf_counter() - t)
    return {"runs_per_s": rate, "cpu_ms": meter.stop(n)}


def _latency(call: Callable[[], object], n: int, gap_s: float) -> tuple[float, float]:
    lat = []
    with _no_cyclic_gc():
        for _ in range(n):
            if gap_s:
                time.sleep(gap_s)
            t = time.perf_counter()
            call()
            lat.append((time.perf_counter() - t) * 1000)
    return pct(lat, 50), pct(lat, 99)


def _side_by_side(side_by_side: SideBySide | None, call: Callable[[], object]) -> dict[str, float]:
    """`side_by_side`'s p50s as a round's `runyard_wait_idle`, `celery_wait_warm`, ..."""
    if side_by_side is None:
        return {}
    with _no_cyclic_gc():
        waits = side_by_side(call)
    return {f"{name}_wait_{kind}": waits[name][f"{kind}_p50"]
            for name in waits for kind in ("idle", "warm")}  # fmt: skip


def celery(
    n: int, c: int, log: Path, root: Path, lat: tuple[int, int, float],
    rounds: int = 0, between: Callable[[], None] | None = None,
    side_by_side: SideBySide | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Bare and fair throughput, then `delay().get()` of one task at a time: `lat` is (idle
    samples, warm samples, idle gap in s). Then `rounds` more of bare and fair throughput,
    each after `between()` (the bench's own round of runyard): head to head, interleaved, so
    that a slower stretch of a shared machine falls on both sides alike (their runs/s in
    `rounds`); and in each, `side_by_side(call)`: bare `delay().get()` and runyard's single
    runs taking turns (interleave.py), their p50s in `rounds` too."""
    from bench.peer_tasks import celery_app, celery_fair, celery_true

    _flush(DB["celery"])
    root.mkdir(parents=True, exist_ok=True)
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
        celery_true.delay().get(timeout=60)
        out: dict[str, Any] = {}

        def bare() -> None:
            for r in [celery_true.delay() for _ in range(n)]:
                r.get(timeout=300)

        def fair(first: int = 0) -> None:  # each task makes directory `first + i`
            for r in [celery_fair.delay(str(root), first + i) for i in range(n)]:
                r.get(timeout=300)

        out["bare"] = _measured(worker, n, bare)
        out["fair"] = _measured(worker, n, fair)
        idle, warm, gap = lat
        ids = iter(range(n, n + 2 * (idle + warm)))

        def call() -> object:
            return celery_true.delay().get(timeout=30)

        out["latency"] = {
            "bare_idle": _latency(call, idle, gap),
            "bare_warm": _latency(call, warm, 0),
            "fair_idle": _latency(
                lambda: celery_fair.delay(str(root), next(ids)).get(timeout=30), idle, gap
            ),
            "fair_warm": _latency(
                lambda: celery_fair.delay(str(root), next(ids)).get(timeout=30), warm, 0
            ),
        }
        out["rounds"] = []
        for k in range(rounds):
            if between is not None:
                between()
            first = (k + 1) * 10 * n  # past the indices the latency runs took
            got: dict[str, Any] = {
                "bare": _measured(worker, n, bare)["runs_per_s"],
                "fair": _measured(worker, n, partial(fair, first))["runs_per_s"],
            }
            out["rounds"].append(got | _side_by_side(side_by_side, call))
        return out
    finally:
        _stop(worker)


async def _arq_run(n: int, job: str, root: str, *, warm: bool = False) -> None:
    from arq import create_pool
    from arq.connections import RedisSettings

    pool = await create_pool(RedisSettings(database=DB["arq"]))
    if warm:
        first = await pool.enqueue_job("arq_true")  # answered once the worker is up
        assert first is not None
        await first.result(timeout=60, poll_delay=0.05)
    else:
        args: list[tuple[Any, ...]] = [() if job == "arq_true" else (root, i) for i in range(n)]
        jobs = [await pool.enqueue_job(job, *a) for a in args]
        for j in jobs:
            assert j is not None
            await j.result(timeout=300, poll_delay=0.05)
    await pool.aclose()


def arq(n: int, c: int, log: Path, root: Path) -> dict[str, Any]:
    _flush(DB["arq"])
    root.mkdir(parents=True, exist_ok=True)
    worker = subprocess.Popen(
        [sys.executable, "-m", "arq", "bench.peer_tasks.ArqWorker"],
        env=_env(BENCH_ARQ_MAX_JOBS=str(c)), stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        asyncio.run(_arq_run(1, "arq_true", "", warm=True))
        return {
            "bare": _measured(worker, n, lambda: asyncio.run(_arq_run(n, "arq_true", ""))),
            "fair": _measured(worker, n, lambda: asyncio.run(_arq_run(n, "arq_fair", str(root)))),
        }
    finally:
        _stop(worker)


def rq(n: int, c: int, log: Path, root: Path) -> dict[str, Any]:
    from rq import Queue

    from bench.rq_task import rq_fair, rq_true

    _flush(DB["rq"])
    root.mkdir(parents=True, exist_ok=True)
    conn = redis.Redis.from_url(f"{REDIS}/{DB['rq']}")
    queue = Queue("bench", connection=conn)
    pool = subprocess.Popen(
        [sys.executable, "-m", "rq.cli", "worker-pool", "bench", "-n", str(c), "--url",
         f"{REDIS}/{DB['rq']}", "--logging-level", "WARNING"],
        env=_env(), stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip

    def run(fair: bool) -> None:
        jobs = [queue.enqueue(rq_fair, str(root), i) if fair else queue.enqueue(rq_true)
                for i in range(n)]  # fmt: skip
        deadline = time.monotonic() + 600
        pending = {j.id for j in jobs}
        while pending:
            if time.monotonic() > deadline:
                raise RuntimeError("rq did not finish")
            pending -= set(queue.finished_job_registry.get_job_ids())
            time.sleep(0.05)

    try:
        warm = queue.enqueue(rq_true)  # finished once the pool is up
        while warm.get_status(refresh=True) != "finished":
            time.sleep(0.05)
        time.sleep(1)  # every worker of the pool started, so the meter sees them all
        return {"bare": _measured(pool, n, lambda: run(False)),
                "fair": _measured(pool, n, lambda: run(True))}  # fmt: skip
    finally:
        _stop(pool)
