"""`python -m bench.probe`: runyard alone at C = 8 — throughput, CPU per run by process,
`Prefer: wait` latency and accepted submissions — in about half a minute. For checking where a
change moved the cost between full `make bench` runs; the report comes only from `make bench`."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from bench import runyard_e2e
from bench.common import Server, write_jobs

N = int(os.environ.get("BENCH_N", "2000"))


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="runyard-probe-", dir="/dev/shm"))
    jobs = write_jobs(base / "jobs")
    out: dict[str, object] = {}
    try:
        srv = Server(base / "ry", jobs, 8).start()
        try:
            t = runyard_e2e.throughput(srv, N)
            out["runs_per_s"] = round(t.runs_per_s)
            out["cpu_ms"] = {k: round(v, 3) for k, v in t.cpu_ms.items()}
            out["wait_warm_ms"] = runyard_e2e.wait_latency(srv, 200, 0)
            out["wait_idle_ms"] = runyard_e2e.wait_latency(srv, 50, 0.05)
            out["idle_dispatch_ms"] = runyard_e2e.idle_dispatch(srv, 50)
            out["submissions"] = runyard_e2e.submissions(srv, N)
            srv.wait_idle()
        finally:
            srv.stop()
        srv = Server(base / "batch", jobs, 8).start()
        try:
            b = runyard_e2e.batch(srv, int(os.environ.get("BENCH_BATCH", "10000")))
            out["batch_runs_per_s"] = round(b.runs_per_s)
            out["batch_cpu_ms"] = {k: round(v, 3) for k, v in b.cpu_ms.items()}
        finally:
            srv.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
