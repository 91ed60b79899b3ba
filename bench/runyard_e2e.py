"""runyard end to end over HTTP: throughput, dispatch latency, submission rate."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import httpx

from bench.common import Server, pct


@dataclass
class Throughput:
    runs_per_s: float
    dispatch_p50_ms: float
    dispatch_p99_ms: float


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


def _times(server: Server) -> tuple[list[float], float, float]:
    """(dispatch latencies, first created_at, last finished_at) from the store."""
    with server.db() as db:
        rows = db.execute(
            "SELECT r.created_at, a.started_at, r.finished_at FROM runs r "
            "JOIN attempts a ON a.run_id = r.id AND a.number = 1"
        ).fetchall()
    dispatch = [(s - c) * 1000 for c, s, _ in rows if s is not None]
    return dispatch, min(r[0] for r in rows), max(r[2] for r in rows if r[2] is not None)


def throughput(server: Server, n: int, clients: int = 16) -> Throughput:
    asyncio.run(_submit_many(server.url, "true", n, clients))
    server.wait_idle()
    dispatch, first, last = _times(server)
    return Throughput(n / (last - first), pct(dispatch, 50), pct(dispatch, 99))


def idle_dispatch(server: Server, n: int = 200) -> tuple[float, float]:
    """Submit one run at a time to an idle server: accepted -> program started (ms)."""
    with httpx.Client(base_url=server.url, timeout=30) as http:
        ids = []
        for _ in range(n):
            run = http.post("/v1/runs", json={"job": "true"}).json()
            ids.append(run["id"])
            server.wait_idle()
    with server.db() as db:
        rows = db.execute(
            "SELECT r.created_at, a.started_at FROM runs r JOIN attempts a ON a.run_id = r.id "
            "WHERE r.id IN (SELECT value FROM json_each(?))",
            (json.dumps(ids),),
        ).fetchall()
    dispatch = [(s - c) * 1000 for c, s in rows]
    return pct(dispatch, 50), pct(dispatch, 99)


def submissions(server: Server, n: int, clients: int = 32, job: str = "true") -> dict[str, float]:
    t = time.perf_counter()
    lat = asyncio.run(_submit_many(server.url, job, n, clients))
    elapsed = time.perf_counter() - t
    return {
        "accepted_per_s": n / elapsed,
        "submit_p50_ms": pct(lat, 50) * 1000,
        "submit_p99_ms": pct(lat, 99) * 1000,
    }
