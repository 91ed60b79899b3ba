"""What the scheduler publishes for health readers: one immutable snapshot of every schedule's
state, taken whole, replaced at each change."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from runyard.models import Schedule


@dataclass(frozen=True, slots=True)
class ScheduleState:
    id: str
    job: str
    paused: bool
    overlap: str
    fire_count: int
    skip_count: int
    fail_count: int
    last_error: str | None
    last_fired_at: float | None
    last_run_id: str | None
    next_fire_at: float | None


@dataclass(frozen=True, slots=True)
class SchedulerSnapshot:
    status: str
    ticks: int
    last_tick_at: float | None
    schedules: tuple[ScheduleState, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "ticks": self.ticks,
            "last_tick_at": self.last_tick_at,
            "schedules": [asdict(s) for s in self.schedules],
        }

    def next(
        self, status: str, schedules: Iterable[Schedule], tick: float | None = None
    ) -> SchedulerSnapshot:
        """The snapshot after this one: `status`, the schedules as they now are, and one more
        tick if `tick` (when it was) is given."""
        states = tuple(
            ScheduleState(
                s.id, s.job, s.paused, s.overlap, s.fire_count, s.skip_count, s.fail_count,
                s.last_error, s.last_fired_at, s.last_run_id,
                None if s.paused else s.next_fire_at,  # as the API shows it: paused, none
            )
            for s in schedules
        )  # fmt: skip
        return SchedulerSnapshot(
            status, self.ticks + (tick is not None), tick or self.last_tick_at, states
        )
