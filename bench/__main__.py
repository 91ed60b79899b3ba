"""`python -m bench` (or `make bench`): every measurement in one run, then docs/benchmarks.md.

BENCH_QUICK=1 shrinks every N for a smoke run (the report says so).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench import cluster, floor, interleave, load, peers, runyard_e2e, sandbox, slurm
from bench.common import REPO, Server, write_jobs
from bench.report import write_report

QUICK = os.environ.get("BENCH_QUICK") == "1"
N = 300 if QUICK else 2000
N_RQ = 100 if QUICK else 500
N_SUBMIT = 1000 if QUICK else 10_000
SUBMIT_S = 1 if QUICK else 4  # seconds of wrk's submissions
N_BATCH = 1000 if QUICK else 10_000
N_SLURM = 20 if QUICK else slurm.N  # the one-node cluster runs about 2 jobs/s
N_SANDBOX = 200 if QUICK else sandbox.N
CAPACITIES = [1, 2, 8]
# rounds of runyard (C = 8) and Celery, interleaved, whose medians the headline ratios use
BATCH_ROUNDS = 2 if QUICK else 3  # a batch and an asyncio floor of as many runs, interleaved
HEAD_TO_HEAD = 2 if QUICK else 5  # 3 left a ratio ±5 % between runs on a drifting machine
# single runs, submit -> result known: (idle samples, warm samples, idle gap between them in s)
LATENCY = (50, 100, 0.05) if QUICK else (200, 500, 0.05)
# the same in each head-to-head round, runyard's and Celery's taking turns (interleave.py)
LATENCY_ROUND = (30, 60, 0.05) if QUICK else (100, 300, 0.05)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def fresh(base: Path, name: str) -> Path:
    path = base / name
    shutil.rmtree(path, ignore_errors=True)
    return path


def server(base: Path, jobs: Path, name: str, capacity: int) -> Server:
    return Server(fresh(base, name), jobs, capacity).start()


def throughput_section(base: Path, jobs: Path, capacities: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in capacities:
        out[f"floor_c{c}"] = floor.asyncio_floor(fresh(base, f"floor{c}"), N, c)
        out[f"limit_c{c}"] = floor.spawn_limit(fresh(base, f"limit{c}"), N, c)
        srv = server(base, jobs, f"ry{c}", c)
        try:
            t = runyard_e2e.throughput(srv, N)
        finally:
            srv.stop()
        out[f"runyard_c{c}"] = t.runs_per_s
        out[f"loaded_dispatch_c{c}"] = (t.dispatch_p50_ms, t.dispatch_p99_ms)
        out[f"cpu_c{c}"] = t.cpu_ms
        out[f"store_ops_c{c}"] = t.store_ops
        log(f"C={c}: floor {out[f'floor_c{c}']:.0f}/s, limit {out[f'limit_c{c}']:.0f}/s, "
            f"runyard {t.runs_per_s:.0f}/s")  # fmt: skip
    if 8 in capacities:  # the same with the load generator this bench used before wrk
        srv = server(base, jobs, "ry8-aiohttp", 8)
        try:
            t = runyard_e2e.throughput(srv, N, load="aiohttp")
        finally:
            srv.stop()
        out["aiohttp_runyard_c8"], out["aiohttp_cpu_c8"] = t.runs_per_s, t.cpu_ms
        log(f"C=8, aiohttp client: runyard {t.runs_per_s:.0f}/s")
    return out


def idle_section(base: Path, jobs: Path) -> dict[str, Any]:
    """Dispatch latency and single runs with `Prefer: wait` on an idle server, then admission."""
    out: dict[str, Any] = {}
    srv = server(base, jobs, "idle", 8)
    try:
        out["idle_dispatch"] = runyard_e2e.idle_dispatch(srv, 50 if QUICK else 200)
        log(f"idle dispatch p50/p99 {out['idle_dispatch']}")
        idle, warm, gap = LATENCY
        out["store_ops_single"] = {}
        out["wait_latency"] = {
            "idle": runyard_e2e.wait_latency(srv, idle, gap),
            "warm": runyard_e2e.wait_latency(srv, warm, 0, out["store_ops_single"]),
        }
        log(f"Prefer: wait latency p50/p99 {out['wait_latency']}")
        out["submissions"] = runyard_e2e.submissions_wrk(srv, SUBMIT_S)
        log(f"submissions (wrk) {out['submissions']}")
        srv.wait_idle()
        out["submissions_aiohttp"] = runyard_e2e.submissions(srv, N_SUBMIT)
        log(f"submissions (aiohttp) {out['submissions_aiohttp']}")
        srv.wait_idle()
    finally:
        srv.stop()
    return out


def batch_section(base: Path, jobs: Path) -> dict[str, Any]:
    """A batch of N_BATCH runs, in rounds each after an asyncio floor of as many runs: the
    ratio is of their medians, one slower stretch of the machine on both sides (a floor
    measured minutes before moved it by up to a fifth)."""
    done: list[runyard_e2e.Throughput] = []
    floors: list[float] = []
    for i in range(BATCH_ROUNDS):
        floors.append(floor.asyncio_floor(fresh(base, f"batch-floor{i}"), N_BATCH, 8))
        srv = server(base, jobs, "batch", 8)
        try:
            done.append(runyard_e2e.batch(srv, N_BATCH))
        finally:
            srv.stop()
        log(f"batch of {N_BATCH}, round {i + 1}: floor {floors[-1]:.0f}/s, "
            f"runyard {done[-1].runs_per_s:.0f}/s")  # fmt: skip
    rounds = [b.runs_per_s for b in done]
    middle = statistics.median(rounds)
    kept = min(done, key=lambda b: abs(b.runs_per_s - middle))  # its per-process figures
    return {
        "runs_per_s": middle, "floor_per_s": statistics.median(floors), "rounds": rounds,
        "floor_rounds": floors, "cpu": kept.cpu_ms, "store_ops": kept.store_ops,
    }  # fmt: skip


def peers_section(base: Path, jobs: Path) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """The peers' runs, and the head-to-head rounds of runyard and Celery (interleaved)."""
    plog = base / "peers.log"
    head: list[float] = []
    head_aiohttp: list[float] = []  # the same rounds with aiohttp as the load generator
    server_cpu: list[float] = []
    wake_us: list[float] = []
    python_ms: list[float] = []

    def runyard_round() -> None:
        wake_us.append(floor.wake_round_trip())  # what a wake-up costs in this stretch
        python_ms.append(floor.interpreter_ms())  # and plain Python
        # throughput first: it times every run the store holds
        srv = server(base, jobs, "head", 8)
        try:
            t = runyard_e2e.throughput(srv, N)
            head.append(t.runs_per_s)
            server_cpu.append(t.cpu_ms["server"])
        finally:
            srv.stop()
        srv = server(base, jobs, "head-aiohttp", 8)
        try:
            head_aiohttp.append(runyard_e2e.throughput(srv, N, load="aiohttp").runs_per_s)
        finally:
            srv.stop()

    def side_by_side(celery_call: Callable[[], object]) -> dict[str, dict[str, float]]:
        """A fresh runyard server's `Prefer: wait` runs and Celery's, taking turns."""
        srv = server(base, jobs, "head-wait", 8)
        try:
            conn = runyard_e2e.connect(srv)
            calls = {"runyard": partial(runyard_e2e.one_and_wait, srv.url, conn),
                     "celery": celery_call}  # fmt: skip
            for call in calls.values():  # unmeasured: the supervisor started, caches warm
                for _ in range(interleave.BLOCK):
                    call()
            got = interleave.alternate(calls, *LATENCY_ROUND)
            conn.close()
            return got
        finally:
            srv.stop()

    celery = peers.celery(
        N, 8, plog, fresh(base, "celery"), LATENCY, HEAD_TO_HEAD, runyard_round, side_by_side
    )
    out: dict[str, Any] = {
        "celery": celery,
        "arq": peers.arq(N, 8, plog, fresh(base, "arq")),
        "rq": peers.rq(N_RQ, 8, plog, fresh(base, "rq")),
    }
    for name, p in out.items():
        bare, fair = p["bare"]["runs_per_s"], p["fair"]["runs_per_s"]
        log(f"{name}: bare {bare:.0f}/s, same work {fair:.0f}/s")
    log(f"celery latency {out['celery']['latency']}")
    head_to_head = {
        "runyard": head,
        "runyard_aiohttp": head_aiohttp,
        "celery_bare": [r["bare"] for r in celery["rounds"]],
        "celery_fair": [r["fair"] for r in celery["rounds"]],
        "runyard_server_cpu": server_cpu,
        "wake_round_trip_us": wake_us,
        "interpreter_ms": python_ms,
        **{
            f"{name}_wait_{kind}": [r[f"{name}_wait_{kind}"] for r in celery["rounds"]]
            for name in ("runyard", "celery")
            for kind in ("idle", "warm")
        },
    }
    log(f"head to head, C = 8: {head_to_head}")
    return out, head_to_head


def slurm_section(base: Path) -> dict[str, Any]:
    """runyard on Slurm beside a plain sbatch loop; when Slurm cannot run here, or this part
    fails, the report says why instead of the run failing (the rest of its figures stand)."""
    try:
        out = slurm.measure(fresh(base, "slurm"), N_SLURM)
    except Exception as exc:  # reported, not raised: it depends on daemons outside runyard
        out = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    if "error" in out:
        log(f"slurm: not measured ({out['error']})")
    else:
        e, ry = out["engine"], out["runyard"]
        log(f"slurm, N = {out['n']}: sbatch loop {e['runs_per_s']:.2f}/s, runyard "
            f"{ry['runs_per_s']:.2f}/s (ratio {out['ratio']:.2f}), "
            f"{ry['squeue_per_min']:.0f} squeue calls/min")  # fmt: skip
    return out


def main() -> None:
    started = time.monotonic()
    results: dict[str, Any] = {"quick": QUICK, "n": N, "n_rq": N_RQ, "n_submit": N_SUBMIT,
                               "submit_s": SUBMIT_S, "latency": LATENCY,
                               "latency_round": LATENCY_ROUND, "n_batch": N_BATCH,
                               "n_slurm": N_SLURM}  # fmt: skip
    tmpfs = Path(tempfile.mkdtemp(prefix="runyard-bench-", dir="/dev/shm"))
    disk = Path(tempfile.mkdtemp(prefix="runyard-bench-", dir="/var/tmp"))
    jobs = write_jobs(tmpfs / "jobs")
    try:
        log("throughput, data dir on tmpfs")
        results["tmpfs"] = throughput_section(tmpfs, jobs, CAPACITIES)
        results["batch"] = batch_section(tmpfs, jobs)
        log("throughput, data dir on disk")
        results["disk"] = throughput_section(disk, jobs, [8])

        results.update(idle_section(tmpfs, jobs))
        results["peers"], results["head_to_head"] = peers_section(tmpfs, jobs)

        srv = server(tmpfs, jobs, "fanout", 8)
        try:
            results["fanout"] = load.fanout(srv, 100 if QUICK else 1000, 50 if QUICK else 100)
            log(f"fan-out {results['fanout']}")
        finally:
            srv.stop()

        results["cluster"] = cluster.scale(tmpfs, jobs, N)
        log(f"cluster {results['cluster']}")

        log("sandbox: the same batch with and without bubblewrap")
        results["sandbox"] = sandbox.measure(fresh(tmpfs, "sandbox"), N_SANDBOX)
        log(f"sandbox {results['sandbox']}")

        log("slurm: one-node cluster, runyard beside a plain sbatch loop")
        results["slurm"] = slurm_section(tmpfs)

        srv = server(tmpfs, jobs, "deep", 2)
        try:

            def submit(s: Server, n: int) -> None:
                runyard_e2e.submissions(s, n // 10 if QUICK else n, job="true")

            results["deep"] = load.deep_store(srv, submit, million=200_000 if QUICK else 1_000_000)
            log(f"deep store {results['deep']}")
        finally:
            srv.stop()
    finally:
        shutil.rmtree(tmpfs, ignore_errors=True)
        shutil.rmtree(disk, ignore_errors=True)
    results["elapsed_s"] = time.monotonic() - started
    write_report(results, REPO / "docs")
    log(f"done in {results['elapsed_s']:.0f}s; wrote docs/benchmarks.md")


if __name__ == "__main__":
    main()
