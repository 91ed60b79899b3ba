"""Streams and the server under load: fan-out latency, /health/live, memory, deep stores."""

from __future__ import annotations

import asyncio
import time

import httpx
from httpx_sse import aconnect_sse

from bench.common import Server, pct


async def _watch(
    client: httpx.AsyncClient,
    url: str,
    lat: list[float],
    ready: list[int],
    all_in: asyncio.Event,
    total: int,
) -> None:
    async with aconnect_sse(client, "GET", url) as source:
        ready.append(1)
        if len(ready) == total:
            all_in.set()
        async for sse in source.aiter_sse():
            now = time.time()
            if sse.event == "log":
                for line in sse.data.splitlines():
                    stamp = line.split(" ", 1)[0]
                    if stamp:
                        lat.append((now - float(stamp)) * 1000)
            elif sse.event == "end":
                return


async def _fanout(server: Server, watchers: int, lines: int, gap: float) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
        run = (await http.post("/v1/runs", json={"job": "ticker",
               "params": {"n": lines, "gap": gap, "delay": 20}})).json()  # fmt: skip
    limits = httpx.Limits(max_connections=watchers + 10, max_keepalive_connections=0)
    lat: list[float] = []
    ready: list[int] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(120, read=None), limits=limits) as client:
        url = f"{server.url}/v1/runs/{run['id']}/logs/stream"
        all_in = asyncio.Event()
        tasks = [asyncio.create_task(_watch(client, url, lat, ready, all_in, watchers))
                 for _ in range(watchers)]  # fmt: skip
        await all_in.wait()
        rss = server.rss_mb()
        await asyncio.gather(*tasks)
    return {"watchers": watchers, "lines": lines, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "deliveries": len(lat), "rss_mb": rss}  # fmt: skip


def fanout(server: Server, watchers: int = 1000, lines: int = 100, gap: float = 0.1) -> dict:
    return asyncio.run(_fanout(server, watchers, lines, gap))


def _latencies(http: httpx.Client, path: str, n: int) -> tuple[float, float]:
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        http.get(path).raise_for_status()
        lat.append((time.perf_counter() - t) * 1000)
    return pct(lat, 50), pct(lat, 99)


def _submit_latency(http: httpx.Client, n: int) -> tuple[float, float]:
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        assert http.post("/v1/runs", json={"job": "true"}).status_code == 202
        lat.append((time.perf_counter() - t) * 1000)
    return pct(lat, 50), pct(lat, 99)


def batch_submit(server: Server, n: int, size: int = 10_000) -> None:
    """n queued runs, as batches of `size` (one request, one transaction each)."""
    with httpx.Client(base_url=server.url, timeout=600) as http:
        while n > 0:
            take = min(n, size)
            resp = http.post("/v1/batches", json={"job": "true", "iterations": take})
            resp.raise_for_status()
            n -= take


def deep_store(
    server: Server, submit, streams: int = 100, million: int = 1_000_000
) -> dict[str, float]:
    """Capacity held by long runs, so everything submitted stays queued: RSS and latencies
    at 1,000, 10,000, 100,000 and `million` stored runs, /health/live with streams open."""
    out: dict[str, float] = {"rss_idle_mb": server.rss_mb()}
    http = httpx.Client(base_url=server.url, timeout=60)
    holders = [http.post("/v1/runs", json={"job": "hold"}).json()["id"]
               for _ in range(server.capacity)]  # fmt: skip
    submit(server, 1000 - server.capacity - 100)
    out["submit_1k_p50_ms"], out["submit_1k_p99_ms"] = _submit_latency(http, 100)
    out["list_1k_p50_ms"], out["list_1k_p99_ms"] = _latencies(http, "/v1/runs?limit=50", 200)
    submit(server, 9000)
    out["rss_10k_queued_mb"] = server.rss_mb()

    async def with_streams() -> tuple[float, float]:
        limits = httpx.Limits(max_connections=streams + 10)
        async with httpx.AsyncClient(timeout=httpx.Timeout(60, read=None), limits=limits) as c:
            urls = [f"{server.url}/v1/runs/{holders[i % len(holders)]}/"
                    + ("events" if i % 2 else "logs/stream") for i in range(streams)]  # fmt: skip
            tasks = [asyncio.create_task(_hold_stream(c, u)) for u in urls]
            await asyncio.sleep(2)
            result = await asyncio.to_thread(_latencies, http, "/health/live", 2000)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return result

    out["live_p50_ms"], out["live_p99_ms"] = asyncio.run(with_streams())
    submit(server, 90_000)
    out["rss_100k_mb"] = server.rss_mb()
    out["submit_100k_p50_ms"], out["submit_100k_p99_ms"] = _submit_latency(http, 100)
    out["list_100k_p50_ms"], out["list_100k_p99_ms"] = _latencies(http, "/v1/runs?limit=50", 200)
    batch_submit(server, million - 100_000 - 200)
    out["rss_1m_mb"] = server.rss_mb()
    out["submit_1m_p50_ms"], out["submit_1m_p99_ms"] = _submit_latency(http, 100)
    out["list_1m_p50_ms"], out["list_1m_p99_ms"] = _latencies(http, "/v1/runs?limit=50", 200)
    out["stored"] = million
    for run_id in holders:
        http.post(f"/v1/runs/{run_id}/cancel")
    http.close()
    return out


async def _hold_stream(client: httpx.AsyncClient, url: str) -> None:
    async with aconnect_sse(client, "GET", url) as source:
        async for _ in source.aiter_sse():
            pass
