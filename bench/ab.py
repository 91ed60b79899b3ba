"""`python -m bench.ab A B [--rounds 6] [--n 4000] [--batch | --wait | --submit]`: two source trees
side by side.

A and B are `src` directories (of a worktree of the commit before a change, say, and of the
change). Each round starts a fresh server (C = 8, data dir on tmpfs) from A and one from B, in
alternating order, and runs N runs through each (over HTTP, or as one batch), reading the
server's CPU per run by thread from /proc. With `--wait`, a round is a server from A and one
from B side by side, and N single runs with `Prefer: wait` on each (warm, after 200 unmeasured),
back to back in blocks of BLOCK, alternating between the two: a single run's p50 moves by less
than this machine's drift from round to round, which alternating every few tens of milliseconds
puts on both sides alike. With `--submit`, a round is wrk's accepted submissions (32 clients for
3 s, bench/runyard_e2e.py) on a fresh server of each, and the CPU is per submission.
This machine's speed drifts by ±15 % within
minutes; interleaved rounds put each slower stretch on both sides, and the medians are what
the CHANGELOG's "A/B" figures quote. For deciding whether a change pays; the report comes
only from `make bench`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench import runyard_e2e
from bench.common import Server, pct, write_jobs

TICK = os.sysconf("SC_CLK_TCK")
BLOCK = 20  # `--wait`: runs in a row on one server before the other's turn


def _thread_ticks(pid: int) -> dict[int, int]:
    """Each thread of `pid`: user + system clock ticks so far."""
    out: dict[int, int] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue  # ended meanwhile
        out[int(tid)] = int(fields[11]) + int(fields[12])
    return out


def one_round(src: str, n: int, batch: bool, submit: bool = False) -> dict[str, float]:
    base = Path(tempfile.mkdtemp(prefix="runyard-ab-", dir="/dev/shm"))
    try:
        jobs = write_jobs(base / "jobs")
        srv = Server(base / "d", jobs, 8).start(PYTHONPATH=src)
        try:
            assert srv.proc is not None
            if submit:
                runyard_e2e.submissions(srv, 500)  # warm: connections, caches, the store
                srv.wait_idle()
            before = _thread_ticks(srv.proc.pid)
            if submit:
                accepted = runyard_e2e.submissions_wrk(srv, 3)
                n = int(accepted["requests"])
            else:
                t = runyard_e2e.batch(srv, n) if batch else runyard_e2e.throughput(srv, n)
            after = _thread_ticks(srv.proc.pid)
        finally:
            srv.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    spent = {tid: (ticks - before.get(tid, 0)) * 1000 / TICK / n for tid, ticks in after.items()}
    loop = spent.pop(srv.proc.pid, 0.0)  # the event loop's thread is the process's first
    others = sorted(spent.values(), reverse=True)  # the store's threads, then the pool's
    if submit:
        return {"accepted_per_s": accepted["accepted_per_s"], "server_ms": loop + sum(others),
                "loop_ms": loop, "busiest_other_ms": others[0] if others else 0.0}  # fmt: skip
    return {"runs_per_s": t.runs_per_s, "server_ms": t.cpu_ms["server"], "loop_ms": loop,
            "busiest_other_ms": others[0] if others else 0.0}  # fmt: skip


def wait_round(a: str, b: str, n: int) -> dict[str, dict[str, float]]:
    """A server from each tree, N single runs with `Prefer: wait` on each, alternating."""
    base = Path(tempfile.mkdtemp(prefix="runyard-ab-", dir="/dev/shm"))
    servers: dict[str, Server] = {}
    try:
        jobs = write_jobs(base / "jobs")
        for i, src in enumerate((a, b)):
            servers[src] = Server(base / f"d{i}", jobs, 8).start(PYTHONPATH=src)
        conns = {src: runyard_e2e.connect(srv) for src, srv in servers.items()}
        times: dict[str, list[float]] = {src: [] for src in servers}
        for k in range((200 + n) // BLOCK):
            for src in (a, b) if k % 2 == 0 else (b, a):
                for i in range(BLOCK):
                    t = time.perf_counter()
                    runyard_e2e.one_and_wait(servers[src].url, conns[src])
                    if k * BLOCK >= 200 and i >= 2:  # each block's first two warm it up
                        times[src].append((time.perf_counter() - t) * 1000)
        for conn in conns.values():
            conn.close()
    finally:
        for srv in servers.values():
            srv.stop()
        shutil.rmtree(base, ignore_errors=True)
    return {src: {"wait_p50_ms": pct(t, 50), "wait_p99_ms": pct(t, 99)} for src, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--n", type=int, default=4000)
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--batch", action="store_true", help="one batch of N, not N submits")
    kind.add_argument("--wait", action="store_true", help="N single runs with Prefer: wait")
    kind.add_argument("--submit", action="store_true", help="wrk's accepted submissions")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {args.a: [], args.b: []}
    for _ in range(args.rounds if args.wait else 0):
        for src, got in wait_round(args.a, args.b, args.n).items():
            results[src].append(got)
            print(src, {k: round(v, 3) for k, v in got.items()}, flush=True)
    for r in range(0 if args.wait else args.rounds):
        for src in (args.a, args.b) if r % 2 == 0 else (args.b, args.a):
            got = one_round(src, args.n, args.batch, args.submit)
            results[src].append(got)
            print(src, {k: round(v, 3) for k, v in got.items()}, flush=True)
    for src, rounds in results.items():
        keys = sorted({k for r in rounds for k in r})
        medians = {k: round(statistics.median(r.get(k, 0.0) for r in rounds), 3) for k in keys}
        print("median", src, medians)


if __name__ == "__main__":
    main()
