"""The store's work for one run, counted in instructions: exact, where runs/s and CPU time on
a shared 2-core VM drift by ±30 % within minutes.

    python -m bench.store_count SRC_A SRC_B   # needs valgrind (Debian's package)

Each source tree's store (`SRC/runyard`) drives N runs on one SQLite connection, with no
event loop and no other thread: insert, claim, start, end and claim, each in a transaction
of its own, as `logic` writes them. Run under valgrind's cachegrind (no cache simulation) for
two N, the difference divided by the runs is the work per run, start-up left out. It leaves
out what the server adds around the store (its hand-overs, the GIL taken back from the loop):
use it to compare what a change of the store's SQL or logic costs, beside `bench.ab`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

SMALL, LARGE = 200, 1200
LEASE = "t"  # the lease token every attempt is claimed under


def drive_runs(n: int) -> None:
    """In the child: n runs' store work on one connection (imports from PYTHONPATH)."""
    from runyard.models import AttemptEnd, AttemptState, ClaimAsk, Run, RunState
    from runyard.store import logic
    from runyard.store.sqlite import SQLiteStore
    from runyard.store.sqlite_reads import execute
    from runyard.store.units import drive

    loop = asyncio.new_event_loop()
    store = SQLiteStore(Path(tempfile.mkdtemp()) / "count.db")
    loop.run_until_complete(store.open())
    conn = store._conn
    assert conn is not None
    step = partial(execute, conn)
    spec = {"command": ["/bin/true"], "artifacts": []}

    def one(i: int) -> None:
        now, run_id = 1000.0 + i, f"01J{i:023d}"
        run = Run(id=run_id, job="true", params={}, state=RunState.QUEUED, priority=0,
                  created_at=now, spec=spec)  # fmt: skip
        end = AttemptEnd(AttemptState.EXITED, now, RunState.SUCCEEDED, "exit code 0", "exit",
                         exit_code=0)  # fmt: skip
        ask = ClaimAsk(limit=1, room={}, now=now, host="h", token=LEASE, generation=0)
        for unit in (
            logic.insert_run(run), logic.claim(1, {}, now, "h", LEASE),
            logic.attempts_started([(run_id, 1, 123, 123, now, now)]),
            logic.end_and_claim(run_id, 1, end, LEASE, ask),
        ):  # fmt: skip
            conn.execute("BEGIN IMMEDIATE")
            drive(unit, step)
            conn.commit()

    loop.run_until_complete(store._thread().call(lambda: [one(i) for i in range(n)]))
    loop.run_until_complete(store.close())


def instructions(src: str, n: int) -> int:
    argv = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
            sys.executable, "-m", "bench.store_count", "--drive", str(n)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{Path.cwd()}"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from valgrind:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="*", help="source trees (each holding runyard/)")
    parser.add_argument("--drive", type=int, help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args()
    if args.drive is not None:
        drive_runs(args.drive)
        return
    for src in args.sources or ["src"]:
        per_run = (instructions(src, LARGE) - instructions(src, SMALL)) / (LARGE - SMALL)
        print(f"{src}: {per_run / 1e6:.3f} million instructions per run of store work")


if __name__ == "__main__":
    main()
