"""Single-run latency of two systems, measured alternately: submit → result known.

A single run's p50 on this machine moves by ±15 % from one minute to the next, more than the
difference being measured between runyard's `Prefer: wait` and Celery's `delay().get()`.
Measured one after the other (each system's runs in a block of seconds), a slower stretch
falls on one side only; measured alternately, it falls on both. Warm runs go in blocks of
BLOCK back to back, the systems taking turns, each block's first WARM_UP left out (the first
runs after the other system's turn find colder caches, on either side); idle runs go one at
a time, each after `gap_s` of nothing, the systems taking turns run by run. The order within
a pair swaps every turn, so neither always goes first.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bench.common import pct

BLOCK = 20  # warm runs of one system in a row before the other's turn
WARM_UP = 2  # of each block, left out


def alternate(
    calls: dict[str, Callable[[], object]], idle: int, warm: int, gap_s: float
) -> dict[str, dict[str, float]]:
    """Per system: `idle_p50`, `idle_p99` over `idle` runs `gap_s` apart, `warm_p50`,
    `warm_p99` over `warm` runs back to back (ms)."""
    names = list(calls)
    idle_ms: dict[str, list[float]] = {name: [] for name in names}
    warm_ms: dict[str, list[float]] = {name: [] for name in names}
    for i in range(idle):
        for name in names if i % 2 == 0 else names[::-1]:
            time.sleep(gap_s)
            idle_ms[name].append(_timed(calls[name]))
    turn = 0
    while any(len(warm_ms[name]) < warm for name in names):
        for name in names if turn % 2 == 0 else names[::-1]:
            for i in range(BLOCK):
                took = _timed(calls[name])
                if i >= WARM_UP and len(warm_ms[name]) < warm:
                    warm_ms[name].append(took)
        turn += 1
    return {
        name: {
            "idle_p50": pct(idle_ms[name], 50), "idle_p99": pct(idle_ms[name], 99),
            "warm_p50": pct(warm_ms[name], 50), "warm_p99": pct(warm_ms[name], 99),
        }
        for name in names
    }  # fmt: skip


def _timed(call: Callable[[], object]) -> float:
    t = time.perf_counter()
    call()
    return (time.perf_counter() - t) * 1000
