"""What a sandbox costs per run: the same batch of `/bin/true`, plain and under bubblewrap.

`python -m bench.sandbox [N]` measures it alone and rewrites its section of
docs/benchmarks.md; `python -m bench` measures it with everything else.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import runyard_e2e
from bench.common import REPO, Server

N = 1000
ROUNDS = 3  # plain and sandboxed alternate, so a machine's drift falls on both
CAPACITY = 8
N_WAIT = 100  # single runs, one at a time: submit -> result known
TITLE = "## Sandbox: the same runs with and without bubblewrap"


def _jobs(directory: Path, sandboxed: bool) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    text = 'command = ["/bin/true"]\nartifacts = []\n'
    (directory / "true.toml").write_text(text + ("[sandbox]\n" if sandboxed else ""))
    return directory


def measure(base: Path, n: int = N) -> dict[str, Any]:
    """Runs/s and CPU per run of a batch of n, plain then sandboxed, ROUNDS times each."""
    if shutil.which("bwrap") is None:
        return {"error": "bwrap is not installed (scripts/bwrap)", "unavailable": True}
    out: dict[str, Any] = {"n": n, "rounds": ROUNDS, "capacity": CAPACITY}
    rates: dict[str, list[float]] = {"plain": [], "sandboxed": []}
    cpu: dict[str, list[dict[str, float]]] = {"plain": [], "sandboxed": []}
    waits: dict[str, list[tuple[float, float]]] = {"plain": [], "sandboxed": []}
    for i in range(ROUNDS):
        for kind, kind_rates in rates.items():
            jobs = _jobs(base / f"jobs-{kind}", kind == "sandboxed")
            data = base / f"{kind}-{i}"
            srv = Server(data, jobs, CAPACITY).start()
            try:
                t = runyard_e2e.batch(srv, n)
                waits[kind].append(runyard_e2e.wait_latency(srv, N_WAIT, 0))
            finally:
                srv.stop()
                shutil.rmtree(data, ignore_errors=True)
            kind_rates.append(t.runs_per_s)
            cpu[kind].append(t.cpu_ms)
    for kind, kind_rates in rates.items():
        out[kind] = {
            "runs_per_s": statistics.mean(kind_rates),
            "all": kind_rates,
            "supervisor_ms": statistics.mean(c.get("supervisor", 0.0) for c in cpu[kind]),
            "programs_ms": statistics.mean(c.get("programs", 0.0) for c in cpu[kind]),
            "wait_p50_ms": statistics.mean(p50 for p50, _ in waits[kind]),
            "wait_p99_ms": statistics.mean(p99 for _, p99 in waits[kind]),
        }
    p, b = out["plain"], out["sandboxed"]
    out["ratio"] = b["runs_per_s"] / p["runs_per_s"]
    out["extra_cpu_ms"] = (
        b["supervisor_ms"] + b["programs_ms"] - p["supervisor_ms"] - p["programs_ms"]
    )
    out["extra_wait_ms"] = b["wait_p50_ms"] - p["wait_p50_ms"]
    return out


def section(r: dict[str, Any]) -> str:
    if r.get("unavailable"):
        return f"\n{TITLE}\n\nNot measured: {r['error']}.\n"
    p, s = r["plain"], r["sandboxed"]
    rounds = ", ".join(f"{a:.0f} / {b:.0f}" for a, b in zip(p["all"], s["all"], strict=True))
    return f"""
{TITLE}

One batch of N = {r["n"]} runs of `/bin/true` (capacity {r["capacity"]}, data dir on tmpfs),
on a server whose job is plain, then on one whose job has a `[sandbox]` table (network none:
every namespace, a tmpfs per hidden directory, the workspace bound back), alternating
{r["rounds"]} times in one invocation; runs/s from the first run created to the last ended.
CPU per run from the kernel's accounting (bench/common.py): `programs` is bwrap, its init
and `/bin/true` for a sandboxed run. Then, on the same servers, {N_WAIT} single runs
one after the other with `Prefer: wait` (submit → result known).

| | batch runs/s | supervisor CPU ms/run | programs CPU ms/run | single run p50 / p99 ms |
|---|---|---|---|---|
{_row("plain", p)}
{_row("sandboxed", s)}

Per run, a sandbox costs about **{r["extra_cpu_ms"]:.1f} ms of CPU** (the namespaces and
mounts bubblewrap makes; the supervisor's share: the command line, bwrap's `--info-fd` read,
its init reaped) and
**{r["extra_wait_ms"]:.1f} ms** of a single run's latency; a batch of `/bin/true`, which is
all spawn, runs at **{r["ratio"]:.2f} times** the plain rate (rounds, plain / sandboxed runs/s:
{rounds}: the spread is the machine's, whose cores other work shares). For a program that
works for longer than that, the sandbox is noise.
"""


def _row(label: str, k: dict[str, Any]) -> str:
    cells = [f"{k['runs_per_s']:.0f}", f"{k['supervisor_ms']:.2f}", f"{k['programs_ms']:.2f}",
             f"{k['wait_p50_ms']:.1f} / {k['wait_p99_ms']:.1f}"]  # fmt: skip
    return f"| {label} | {' | '.join(cells)} |"


def rewrite(docs: Path, r: dict[str, Any]) -> None:
    """Replace (or add) this section of benchmarks.md, leaving the others as they are."""
    path = docs / "benchmarks.md"
    text = path.read_text()
    start = text.find(f"\n{TITLE}\n")
    if start >= 0:
        after = text.find("\n## ", start + len(TITLE) + 2)
        text = text[:start] + (text[after:] if after >= 0 else "\n")
    path.write_text(text.rstrip("\n") + "\n" + section(r))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else N
    base = Path(tempfile.mkdtemp(prefix="runyard-bench-sandbox-", dir="/dev/shm"))
    started = time.monotonic()
    try:
        r = measure(base, n)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(r)
    rewrite(REPO / "docs", r)
    print(f"{time.monotonic() - started:.1f} s; wrote docs/benchmarks.md", file=sys.stderr)


if __name__ == "__main__":
    main()
