"""The health snapshot's rebuild rests longer as it costs more: its count of queued runs takes
what the queue is deep, and under churn it would otherwise run ten times a second."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from runyard.models import RunState
from runyard.services.health import MAX_REST_S, REBUILD_SHARE, HealthMonitor, HealthSources


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CountingStore:
    """A store whose count of queued runs takes `cost` seconds of the clock."""

    def __init__(self, clock: Clock, cost: float, gives_up: bool = False) -> None:
        self.clock, self.cost, self.counts, self.gives_up = clock, cost, 0, gives_up

    async def count_runs(self, state: RunState) -> int:
        self.clock.now += self.cost
        self.counts += 1
        if self.gives_up:  # as the check's timeout would end it, after `cost`
            raise TimeoutError
        return 1_000_000

    async def health_problems(self) -> dict[str, str]:
        return {}


class StalledSupervisor:
    """A supervisor that answers no ping: each check waits out its timeout (of the clock)."""

    healthy = True

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    async def health(self, timeout_s: float) -> Any:
        self.clock.now += timeout_s
        raise TimeoutError


async def rests_of(
    tmp_path: Path, cost: float, rebuilds: int = 3, stalled: bool = False, gives_up: bool = False
) -> tuple[list[float], int]:
    clock = Clock()
    store = CountingStore(clock, cost, gives_up)
    executor = StalledSupervisor(clock) if stalled else SimpleNamespace(healthy=False)
    hub = SimpleNamespace(
        watchers=0, tailers={}, lagged_total=0, notifier=SimpleNamespace(mode="x")
    )
    sources = HealthSources(
        store=store,  # type: ignore[arg-type]
        executor=executor,  # type: ignore[arg-type]
        slots=SimpleNamespace(active=0, capacity=8),  # type: ignore[arg-type]
        hub=hub,  # type: ignore[arg-type]
        data_dir=tmp_path,
        reconcile=lambda: SimpleNamespace(ok=True, error=None),
        scheduler=lambda: None,
    )
    rests: list[float] = []
    enough = asyncio.Event()

    async def sleep(seconds: float) -> None:
        rests.append(seconds)
        if len(rests) == rebuilds:
            enough.set()
        await asyncio.sleep(0)

    monitor = HealthMonitor(sources, 8, interval_s=0.001, clock=clock, sleep=sleep)
    loop: asyncio.Task[Any] = asyncio.ensure_future(monitor._loop())
    await enough.wait()
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop
    assert monitor.current.queued == (0 if gives_up else 1_000_000)
    return rests, store.counts


def test_a_cheap_rebuild_rests_the_minimum(tmp_path: Path) -> None:
    rests, counts = asyncio.run(rests_of(tmp_path, cost=0.001))
    assert rests == [0.1] * 3 and counts == 3


def test_a_costly_rebuild_rests_in_proportion(tmp_path: Path) -> None:
    rests, _ = asyncio.run(rests_of(tmp_path, cost=0.065))  # a million queued runs, counted
    assert all(r == pytest.approx(0.065 * (1 - REBUILD_SHARE) / REBUILD_SHARE) for r in rests)
    assert all(0.065 / (0.065 + r) <= REBUILD_SHARE + 1e-9 for r in rests)


def test_a_count_of_any_cost_rests_no_longer_than_the_cap(tmp_path: Path) -> None:
    rests, _ = asyncio.run(rests_of(tmp_path, cost=10.0))  # a queue deeper than anyone's
    assert rests == [MAX_REST_S] * 3


def test_a_check_waiting_out_its_timeout_does_not_lengthen_the_rest(tmp_path: Path) -> None:
    """A stalled supervisor costs the rebuild two seconds of waiting, no CPU: resting for it
    would only hide its recovery from readiness."""
    rests, _ = asyncio.run(rests_of(tmp_path, cost=0.001, stalled=True))
    assert rests == [0.1] * 3


def test_a_count_that_times_out_rests_as_long_as_it_took(tmp_path: Path) -> None:
    """A count given up at its timeout goes on in the store: the next must not pile on."""
    rests, _ = asyncio.run(rests_of(tmp_path, cost=2.0, gives_up=True))
    assert rests == [MAX_REST_S] * 3


def test_readiness_fails_while_a_held_lease_has_lapsed(tmp_path: Path) -> None:
    """A member whose heartbeat hung (a row lock, a half-open link) claims nothing once its
    lease lapses, and readiness said ok all along: a load balancer kept sending it work."""
    from runyard.services.lease import Lease

    lease, now = Lease(), [100.0]
    lease.hold("tok", now[0], until=103.0)
    sources = HealthSources(
        store=CountingStore(Clock(), 0.0, False),  # type: ignore[arg-type]
        executor=SimpleNamespace(healthy=False),  # type: ignore[arg-type]
        slots=SimpleNamespace(active=0, capacity=8),  # type: ignore[arg-type]
        hub=SimpleNamespace(watchers=0, tailers={}, lagged_total=0,
                            notifier=SimpleNamespace(mode="x")),  # type: ignore[arg-type]
        data_dir=tmp_path, reconcile=lambda: SimpleNamespace(ok=True, error=None),
        scheduler=lambda: None, lease=lambda: lease.token,
        lease_problem=lambda: "lapsed: not renewed" if lease.lapsed(now[0]) else None,
    )  # fmt: skip
    monitor = HealthMonitor(sources, 8)
    assert "lease" not in asyncio.run(monitor.build()).failed_checks
    now[0] = 104.0
    assert "lapsed" in asyncio.run(monitor.build()).failed_checks["lease"]
    lease.hold("tok", now[0], until=107.0)  # renewed: ready again
    assert "lease" not in asyncio.run(monitor.build()).failed_checks


class HeldCount:
    """A store whose count of queued runs sees what was stored when it began, and answers
    only once released."""

    def __init__(self, stored: list[int]) -> None:
        self.stored = stored
        self.began, self.release = asyncio.Event(), asyncio.Event()

    async def count_runs(self, state: RunState) -> int:
        counted = self.stored[0]
        self.began.set()
        await self.release.wait()
        return counted

    async def health_problems(self) -> dict[str, str]:
        return {}


def test_submissions_are_counted_at_once_and_never_twice(tmp_path: Path) -> None:
    async def scenario() -> None:
        stored = [0]
        store = HeldCount(stored)
        sources = HealthSources(
            store=store,  # type: ignore[arg-type]
            executor=SimpleNamespace(healthy=False),  # type: ignore[arg-type]
            slots=SimpleNamespace(active=0, capacity=8),  # type: ignore[arg-type]
            hub=None,  # type: ignore[arg-type]
            data_dir=tmp_path,
            reconcile=lambda: SimpleNamespace(ok=True, error=None),
            scheduler=lambda: None,
        )
        monitor = HealthMonitor(sources, 8)
        stored[0] += 2
        monitor.submitted(2)
        seen = monitor.current
        assert seen.queued == 2  # read right after the answers: no rebuild needed
        assert monitor.current is seen  # nothing new since: the same snapshot
        rebuild = asyncio.ensure_future(monitor.publish())
        await store.began.wait()
        stored[0] += 1  # stored after the count read the table: not in it
        monitor.submitted()
        store.release.set()
        await rebuild
        assert monitor.current.queued == 3  # kept until a count that includes it
        await monitor.publish()
        assert monitor.current.queued == 3  # that count: none of them counted twice
        monitor.submitted()
        monitor.mark_draining()
        assert (monitor.current.queued, monitor.current.draining) == (4, True)

    asyncio.run(scenario())
