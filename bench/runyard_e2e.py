"""runyard end to end over HTTP: throughput, dispatch latency, submission rate."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import psutil

from bench.common import CpuMeter, Server, pct, process_tree, supervisor_pid


@dataclass
class Throughput:
    runs_per_s: float
    dispatch_p50_ms: float
    dispatch_p99_ms: float
    cpu_ms: dict[str, float] = field(default_factory=dict)
    store_ops: dict[str, float] = field(default_factory=dict)


def store_ops(server: Server) -> dict[str, float]:
    """The store operations the server has made so far, by name (its /metrics counts)."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    prefix = 'runyard_store_operation_seconds_count{operation="'
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            name, _, rest = line[len(prefix) :].partition('"')
            found[name] = float(rest.rsplit(" ", 1)[1])
    return found


def ops_per_run(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    """Store operations per run between two readings (the readings' own /metrics aside)."""
    return {k: (v - before.get(k, 0.0)) / n for k, v in after.items() if v > before.get(k, 0.0)}


async def _submit_many(url: str, job: str, n: int, clients: int) -> list[float]:
    """Submit n runs from `clients` concurrent keep-alive connections; each submit's latency.

    aiohttp (C-accelerated) rather than httpx: the load generator shares the machine's two
    cores with the server, and the benchmark measures the server, not the client library."""
    import aiohttp

    latencies: list[float] = []
    counter = iter(range(n))
    body = json.dumps({"job": job}).encode()
    headers = {"content-type": "application/json"}

    async def client(session: aiohttp.ClientSession) -> None:
        for _ in counter:
            t = time.perf_counter()
            async with session.post(f"{url}/v1/runs", data=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 202:
                    raise RuntimeError(f"submit failed: {resp.status}")
            latencies.append(time.perf_counter() - t)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return latencies


def _times(server: Server, skip: str = "") -> tuple[list[float], float, float]:
    """(dispatch latencies, first created_at, last finished_at) from the store."""
    with server.db() as db:
        rows = db.execute(
            "SELECT r.created_at, a.started_at, r.finished_at FROM runs r "
            "JOIN attempts a ON a.run_id = r.id AND a.number = 1 WHERE r.id != ?",
            (skip,),
        ).fetchall()
    dispatch = [(s - c) * 1000 for c, s, _ in rows if s is not None]
    return dispatch, min(r[0] for r in rows), max(r[2] for r in rows if r[2] is not None)


def _wait_ended(server: Server, n: int, timeout: float = 600) -> None:
    """Poll the store's file (a WAL reader costs the server nothing) until n runs ended; the
    server's /health would charge its own CPU to the runs being measured."""
    deadline = time.monotonic() + timeout
    db = sqlite3.connect(server.data_dir / "runyard.db")
    try:
        while time.monotonic() < deadline:
            (done,) = db.execute(
                "SELECT count(*) FROM runs WHERE finished_at IS NOT NULL"
            ).fetchone()
            if done >= n:
                return
            time.sleep(0.02)
    finally:
        db.close()
    raise RuntimeError("runs did not finish")


def one_and_wait(url: str, conn: http.client.HTTPConnection) -> str:
    """Submit one run with `Prefer: wait` on a kept-alive connection: its id once it ended."""
    conn.request("POST", "/v1/runs", body=b'{"job": "true"}',
                 headers={"content-type": "application/json", "prefer": "wait=30"})  # fmt: skip
    resp = conn.getresponse()
    body = json.loads(resp.read())
    if resp.status != 200 or body["state"] != "succeeded":
        raise RuntimeError(f"{url}: waited run ended {resp.status} {body.get('state')}")
    return str(body["id"])


def connect(server: Server) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)


def _measured(server: Server, n: int, load: Callable[[], float]) -> Throughput:
    """`load` makes about n runs: first created -> last ended, with the CPU each process spent
    per run over that window (the supervisor started by a warm-up run beforehand). The runs
    counted are those the store holds once `load` returns: wrk stops after its n-th answer,
    with up to one request per connection still on its way, which are runs too. `load`
    returns the CPU seconds of a load generator it ran as a child (wrk), the client's too."""
    conn = connect(server)
    warm = one_and_wait(server.url, conn)
    conn.close()
    sup = supervisor_pid(server.data_dir)
    assert server.proc is not None and sup is not None
    meter = CpuMeter(
        {"server": process_tree(server.proc.pid), "supervisor": [psutil.Process(sup)]}
    ).start()
    ops = store_ops(server)
    child_s = load()
    with server.db() as db:
        made = db.execute("SELECT count(*) FROM runs").fetchone()[0] - 1  # the warm-up's aside
    _wait_ended(server, made + 1)
    cpu = meter.stop(made)
    cpu["client"] += child_s * 1000 / made
    ops = ops_per_run(ops, store_ops(server), made)
    dispatch, first, last = _times(server, skip=warm)
    return Throughput(made / (last - first), pct(dispatch, 50), pct(dispatch, 99), cpu, ops)


# wrk's Lua: every answer must be a 202; wrk leaves once n have come back (its duration is
# only a bound: a stopped thread would leave its main thread asleep until that ran out)
_WRK_UNTIL_N = """wrk.method = "POST"
wrk.body = '{"job": "%s"}'
wrk.headers["Content-Type"] = "application/json"
local answered = 0
response = function(status, headers, body)
  if status ~= 202 then
    io.stderr:write("refused: " .. status .. "\\n")
    os.exit(1)
  end
  answered = answered + 1
  if answered >= %d then os.exit(0) end
end
"""


def _submit_wrk(server: Server, job: str, n: int, clients: int) -> float:
    """Submit n runs and a few more from `clients` keep-alive connections of wrk (one C
    thread), each posting the next as soon as its last was answered. wrk leaves at its n-th
    answer, with a request or none on its way on each other connection: returns once the
    store's count of runs has stopped moving (what was on its way is stored, or was dropped
    with the connection), with wrk's CPU seconds (its rusage, from its wait)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script, tempfile.TemporaryFile() as out:
        script.write(_WRK_UNTIL_N % (job, n))
        script.flush()
        argv = ["wrk", "-t1", f"-c{clients}", "-d600s", "-s", script.name,
                f"{server.url}/v1/runs"]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            out.seek(0)
            said = out.read().decode(errors="replace")
            raise RuntimeError(f"wrk: not every submission was accepted:\n{said}")
    with server.db() as db:
        count = -1
        while (now := db.execute("SELECT count(*) FROM runs").fetchone()[0]) != count:
            count = now
            time.sleep(0.05)
    if count < n:
        raise RuntimeError(f"wrk: {n} answers, {count} runs stored")
    return float(usage.ru_utime + usage.ru_stime)


def throughput(server: Server, n: int, clients: int = 16, load: str = "wrk") -> Throughput:
    """n runs submitted over HTTP by `clients` at once: by wrk (`load="wrk"`), or by aiohttp
    in this process (`"aiohttp"`). On a machine of two cores the load generator shares them
    with what it measures: aiohttp costs ~0.15 ms of CPU per submission there, wrk a tenth of
    it (both are counted under *client*)."""

    def by_aiohttp() -> float:
        asyncio.run(_submit_many(server.url, "true", n, clients))
        return 0.0  # in this process: its CPU is the meter's own

    if load == "aiohttp":
        import aiohttp  # noqa: F401  imported before the meter starts: not a run's cost

        return _measured(server, n, by_aiohttp)
    return _measured(server, n, lambda: _submit_wrk(server, "true", n, clients))


def batch(server: Server, n: int) -> Throughput:
    """One batch of n runs (`iterations`), one request: the queue, dispatch and supervisor
    without HTTP per run — the path a sweep takes."""

    def submit() -> float:
        resp = httpx.post(f"{server.url}/v1/batches", json={"job": "true", "iterations": n},
                          timeout=600)  # fmt: skip
        if resp.status_code not in {201, 202}:
            raise RuntimeError(f"batch refused: {resp.status_code} {resp.text[:200]}")
        return 0.0

    return _measured(server, n, submit)


def wait_latency(
    server: Server, n: int, gap_s: float, ops: dict[str, float] | None = None
) -> tuple[float, float]:
    """One run at a time with `Prefer: wait`, submit -> result known (ms), `gap_s` apart: idle
    with a gap (the loop, the supervisor and the caches gone quiet), warm back to back.
    `ops`, if given, receives the store operations per run."""
    before = store_ops(server) if ops is not None else {}
    conn = connect(server)
    lat = []
    for _ in range(n):
        if gap_s:
            time.sleep(gap_s)
        t = time.perf_counter()
        one_and_wait(server.url, conn)
        lat.append((time.perf_counter() - t) * 1000)
    conn.close()
    if ops is not None:
        server.wait_idle()  # the last run's start and end are written
        ops.update(ops_per_run(before, store_ops(server), n))
    return pct(lat, 50), pct(lat, 99)


def idle_dispatch(server: Server, n: int = 200) -> tuple[float, float]:
    """Submit one run at a time to an idle server, the next once the one before ended (seen
    in the store's file: asking the server, /health, while the dispatch being measured is
    under way would put that request and its store reads in the way): accepted -> program
    started (ms)."""
    server.wait_idle()
    with server.db() as db:
        (ended,) = db.execute("SELECT count(*) FROM runs WHERE finished_at IS NOT NULL").fetchone()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        ids = []
        for _ in range(n):
            run = http.post("/v1/runs", json={"job": "true"}).json()
            ids.append(run["id"])
            _wait_ended(server, ended + len(ids))
    with server.db() as db:
        rows = db.execute(
            "SELECT r.created_at, a.started_at FROM runs r JOIN attempts a ON a.run_id = r.id "
            "WHERE r.id IN (SELECT value FROM json_each(?))",
            (json.dumps(ids),),
        ).fetchall()
    dispatch = [(s - c) * 1000 for c, s in rows]
    return pct(dispatch, 50), pct(dispatch, 99)


_WRK_SCRIPT = """wrk.method = "POST"
wrk.body = '{"job": "%s"}'
wrk.headers["Content-Type"] = "application/json"
"""


def submissions_wrk(
    server: Server, seconds: float, clients: int = 32, job: str = "true"
) -> dict[str, float]:
    """Accepted submissions/s from wrk: `clients` keep-alive connections posting for `seconds`.

    wrk is C and one thread: it takes about a tenth of the CPU per request that aiohttp in
    this process does, CPU the server otherwise loses to its own load generator on a machine
    of two cores. Every answer must be a 202, and every one of them a run in the store."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script, server.db() as db:
        script.write(_WRK_SCRIPT % job)
        script.flush()
        before = db.execute("SELECT count(*) FROM runs").fetchone()[0]
        argv = ["wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "--latency", "-s", script.name,
                f"{server.url}/v1/runs"]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        stored = db.execute("SELECT count(*) FROM runs").fetchone()[0] - before
    done = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if done is None or "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk: not every submission was accepted:\n{out}")
    requests, took = int(done[1]), float(done[2]) / (1000 if done[3] == "ms" else 1)
    if stored < requests:
        raise RuntimeError(f"wrk: {requests} answered 202, {stored} runs stored")
    return {
        "accepted_per_s": requests / took,
        "submit_p50_ms": _wrk_ms(out, "50%"),
        "submit_p99_ms": _wrk_ms(out, "99%"),
        "requests": requests,
    }


def _wrk_ms(out: str, which: str) -> float:
    """A percentile of wrk's --latency table, in milliseconds."""
    found = re.search(rf"^\s*{re.escape(which)}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"wrk: no {which} latency in:\n{out}")
    return float(found[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found[2]]


def submissions(server: Server, n: int, clients: int = 32, job: str = "true") -> dict[str, float]:
    t = time.perf_counter()
    lat = asyncio.run(_submit_many(server.url, job, n, clients))
    elapsed = time.perf_counter() - t
    return {
        "accepted_per_s": n / elapsed,
        "submit_p50_ms": pct(lat, 50) * 1000,
        "submit_p99_ms": pct(lat, 99) * 1000,
    }
