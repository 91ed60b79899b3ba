"""Slurm: N runs of `/bin/true` through runyard's Slurm executor beside the same N jobs through
a plain sbatch loop (the engine's own rate), on one real one-node cluster in the same run.

The cluster is tests/slurm_cluster.py's (2 CPUs, a scheduler pass every second): the engine,
not runyard, sets the pace, so the figure that matters is runyard / engine, and how many
squeue calls runyard spent following its jobs. `python -m bench.slurm` runs this part alone.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from tests.slurm_cluster import MARKER, NODE_CPUS, SlurmCluster, SlurmClusterError

from bench.common import Server
from bench.runyard_e2e import _times, _wait_ended

N = 40  # the engine runs ~2 jobs/s here, runyard ~1/s: about 60 s for both sides
POLL_S = 0.5  # runyard's squeue period
EXIT_GRACE_S = 5.0
CHECK_S = 0.2  # the sbatch loop's squeue period (Slurm notifies nobody: polled here too)
ENDED_TIMEOUT_S = 300.0
# squeue -t all says these of a job that may still run: not ended
LIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
        "RESIZING", "SIGNALING", "STAGE_OUT"}  # fmt: skip
JOB = 'executor = "slurm"\ncommand = ["/bin/true"]\nartifacts = []\n'


def _sbatch(cluster: SlurmCluster) -> str:
    out = cluster.run("sbatch", "--parsable", "--wrap", "/bin/true", check=True)
    return out.stdout.strip().split(";")[0]


def _wait_jobs_ended(cluster: SlurmCluster, ids: list[str]) -> int:
    """One `squeue -j id,id,...` per CHECK_S until none of `ids` may still run (a job
    already purged is not listed: ended too); the number of squeue calls."""
    deadline = time.monotonic() + ENDED_TIMEOUT_S
    checks = 0
    while time.monotonic() < deadline:
        checks += 1
        out = cluster.run("squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%T")
        if out.returncode != 0 and "Invalid job id" not in out.stderr:
            raise RuntimeError(f"squeue failed: {out.stderr.strip()}")
        if out.returncode != 0 or not LIVE.intersection(out.stdout.split()):
            return checks
        time.sleep(CHECK_S)
    raise RuntimeError(f"Slurm jobs did not end in {ENDED_TIMEOUT_S:g} s")


def engine(cluster: SlurmCluster, n: int) -> dict[str, float]:
    """n `sbatch --wrap /bin/true` back to back: first submission -> all ended."""
    _wait_jobs_ended(cluster, [_sbatch(cluster)])  # warm-up: the cluster runs jobs
    started = time.monotonic()
    ids = [_sbatch(cluster) for _ in range(n)]
    submitted = time.monotonic() - started
    checks = _wait_jobs_ended(cluster, ids)
    elapsed = time.monotonic() - started
    return {"runs_per_s": n / elapsed, "elapsed_s": elapsed, "submit_s": submitted,
            "squeue_checks": checks}  # fmt: skip


def _slurm_status(srv: Server) -> dict[str, Any]:
    body = httpx.get(f"{srv.url}/v1/status", timeout=10).json()
    found: dict[str, Any] = body["executor"]["slurm"]
    return found


def runyard(cluster: SlurmCluster, base: Path, n: int) -> dict[str, float]:
    """One batch of n runs of a job with `executor = "slurm"`: the request sent -> every run
    terminal in the store, and the squeue calls the server made meanwhile (/v1/status)."""
    jobs = base / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    (jobs / "slurm_true.toml").write_text(JOB)
    env = {
        "SLURM_CONF": cluster.env["SLURM_CONF"],
        # the cluster's marker: its stop() finds whatever runyard's jobs left behind
        MARKER: cluster.env[MARKER],
        "RUNYARD_SLURM_SHARED_DIR": str(base / "shared"),
        "RUNYARD_SLURM_POLL_S": str(POLL_S),
        "RUNYARD_SLURM_EXIT_GRACE_S": str(EXIT_GRACE_S),
        # sbatch as fast as the loop above: the engine, not runyard's limit, sets the pace
        "RUNYARD_SLURM_SUBMIT_PER_S": "1000",
    }
    srv = Server(base / "data", jobs, max(n, 8)).start(**env)
    try:
        warm = httpx.post(f"{srv.url}/v1/runs", json={"job": "slurm_true"},
                          headers={"prefer": "wait=60"}, timeout=90).json()  # fmt: skip
        if warm.get("state") != "succeeded":
            raise RuntimeError(f"warm-up run on Slurm: {warm.get('state')} {warm.get('reason')}")
        before = _slurm_status(srv)
        started = time.monotonic()
        resp = httpx.post(f"{srv.url}/v1/batches", json={"job": "slurm_true", "iterations": n},
                          timeout=60)  # fmt: skip
        if resp.status_code not in {201, 202}:
            raise RuntimeError(f"batch refused: {resp.status_code} {resp.text[:200]}")
        _wait_ended(srv, n + 1, timeout=ENDED_TIMEOUT_S)
        elapsed = time.monotonic() - started
        after = _slurm_status(srv)
        window = time.monotonic() - started
        _, first, last = _times(srv, skip=str(warm["id"]))
        with srv.db() as db:
            states = dict(db.execute("SELECT state, count(*) FROM runs GROUP BY state").fetchall())
    finally:
        srv.stop()
    if states.get("succeeded") != n + 1:
        raise RuntimeError(f"runs on Slurm ended {states}")
    calls = int(after["squeue_calls"]) - int(before["squeue_calls"])
    polls = int(after["polls"]) - int(before["polls"])
    # the store's finished_at is when the program ended (its exit record), not when runyard
    # learnt it; the bench's clock (request sent -> every run terminal in the store) counts
    # the poll period too, as the sbatch loop's clock counts its own
    return {"runs_per_s": n / elapsed, "elapsed_s": elapsed,
            "programs_span_s": last - first, "squeue_calls": calls, "polls": polls,
            "squeue_per_min": calls * 60 / window}  # fmt: skip


def measure(base: Path, n: int = N) -> dict[str, Any]:
    """Both sides on one cluster; {"error": why, "unavailable": True} when Slurm cannot start
    here."""
    base.mkdir(parents=True, exist_ok=True)
    try:
        cluster = SlurmCluster(base / "cluster").start()
    except (SlurmClusterError, OSError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return {"error": why, "unavailable": True}
    try:
        eng = engine(cluster, n)
        ry = runyard(cluster, base / "runyard", n)
    finally:
        cluster.stop()
    ratio = ry["runs_per_s"] / eng["runs_per_s"]
    return {"n": n, "cpus": NODE_CPUS, "poll_s": POLL_S, "check_s": CHECK_S,
            "engine": eng, "runyard": ry, "ratio": ratio}  # fmt: skip


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else N
    base = Path(tempfile.mkdtemp(prefix="runyard-bench-slurm-", dir="/dev/shm"))
    started = time.monotonic()
    try:
        print(measure(base, n))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{time.monotonic() - started:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
