"""Capacity and per-job concurrency hold, judged from the attempts' recorded times."""

from __future__ import annotations

import pytest

from runyard.models import RunState

pytestmark = pytest.mark.e2e


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    # at equal times an end sorts before a start (-1 < 1): touching intervals do not overlap
    best = cur = 0
    for _, delta in events:
        cur += delta
        best = max(best, cur)
    return best


def test_capacity_and_job_concurrency_never_exceeded(start_server, write_job, jobs_dir) -> None:
    write_job("limited", 'command = ["sleep", "0.3"]\nconcurrency = 2\n')
    write_job("free", 'command = ["sleep", "0.3"]\n')
    server = start_server(jobs_dir, capacity=3)
    with server.client() as c:
        ids = [c.submit(job).id for _ in range(6) for job in ("limited", "free")]
        runs = [server.wait_run(c, i, timeout=60) for i in ids]
        assert all(r.state is RunState.SUCCEEDED for r in runs)
        full = [c.run(r.id) for r in runs]
    spans = {
        r.id: (r.job, r.attempts[0].started_at.timestamp(), r.attempts[0].ended_at.timestamp())
        for r in full
        if r.attempts
    }
    everything = [(s, e) for _, s, e in spans.values()]
    limited = [(s, e) for job, s, e in spans.values() if job == "limited"]
    assert max_overlap(everything) <= 3
    assert max_overlap(limited) <= 2
    assert max_overlap(everything) >= 2  # it did run things side by side
