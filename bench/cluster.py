"""Several servers over one PostgreSQL: submit throughput and end-to-end runs/s with 1, 2
and 3 servers, each with the same capacity, sharing this machine's cores.

The ratio that matters is k servers / 1 server, measured side by side in one run. On one
machine the servers share its two cores with PostgreSQL and the load generator, so this
shows what the cluster's coordination costs, not what k hosts would add.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg

from bench.common import Server, pct
from bench.runyard_e2e import _submit_many

ADMIN_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"


@contextlib.contextmanager
def database() -> Iterator[str]:
    name = f"rybench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


async def _spread(urls: list[str], n: int, clients: int) -> list[float]:
    """n submissions split evenly over the servers (a load balancer's round robin)."""
    share = [n // len(urls) + (i < n % len(urls)) for i in range(len(urls))]
    each = max(1, clients // len(urls))
    parts = await asyncio.gather(
        *(_submit_many(u, "true", k, each) for u, k in zip(urls, share, strict=True))
    )
    return list(itertools.chain.from_iterable(parts))


def _wait_all_ended(dsn: str, n: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            (done,) = conn.execute(
                "SELECT count(*) FROM runs WHERE finished_at IS NOT NULL"
            ).fetchone()
            if done >= n:
                return
            time.sleep(0.1)
    raise RuntimeError("cluster runs did not finish")


def one_size(base: Path, jobs: Path, k: int, n: int, capacity: int) -> dict[str, float]:
    with database() as dsn:
        servers = []
        try:
            for i in range(k):
                s = Server(base / f"cluster{k}-{i}", jobs, capacity)
                servers.append(s.start(RUNYARD_DATABASE_URL=dsn, RUNYARD_SERVER_ID=f"s{i}"))
            t = time.perf_counter()
            lat = asyncio.run(_spread([s.url for s in servers], n, 32))
            accepted = n / (time.perf_counter() - t)
            _wait_all_ended(dsn, n)
            with psycopg.connect(dsn) as conn:
                first, last = conn.execute(
                    "SELECT min(created_at), max(finished_at) FROM runs"
                ).fetchone()
                hosts = dict(
                    conn.execute("SELECT host, count(*) FROM attempts GROUP BY host").fetchall()
                )
        finally:
            for s in servers:
                s.stop()
    return {
        "accepted_per_s": accepted,
        "submit_p99_ms": pct(lat, 99) * 1000,
        "runs_per_s": n / (last - first),
        "busiest_share": max(hosts.values()) / n,
    }


def scale(base: Path, jobs: Path, n: int, capacity: int = 4) -> dict[str, dict[str, float]]:
    return {str(k): one_size(base, jobs, k, n, capacity) for k in (1, 2, 3)}
