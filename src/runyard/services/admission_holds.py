"""Runs admitted and not yet stored, held against the queue's limits (admission.py).

A count of the store's queued runs sees what was stored before it began; a run admitted
meanwhile is counted from its hold until it is stored (or refused), and one stored while a
count was under way, which that count may have missed, is counted again by that count. In a
race a limit can thus refuse a run that would have fitted, never admit one that does not.
One server's: servers sharing a store do not see each other's holds.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from runyard.models import RunState
from runyard.store import Store


@dataclass
class Hold:
    """`runs` of `job` admitted: released once their insert is over, whatever its outcome."""

    holds: Holds
    job: str
    runs: int
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.holds.give_back(self)


@dataclass
class Holds:
    held: Counter[str] = field(default_factory=Counter)  # runs admitted, by job
    released: int = 0  # holds given back so far: where a count begins
    # holds given back since the oldest count under way began: (its number, job, runs)
    late: list[tuple[int, str, int]] = field(default_factory=list)
    counting: Counter[int] = field(default_factory=Counter)  # counts under way, by start

    async def count(self, store: Store, job: str | None) -> tuple[int, int]:
        """The store's queued runs (of `job`, or all), and where the count began; the caller
        calls `counted` with the latter once it has looked at `unseen`."""
        began = self.released
        self.counting[began] += 1
        try:
            return await store.count_runs(RunState.QUEUED, job), began
        except BaseException:
            self.counted(began)
            raise

    def unseen(self, began: int, job: str | None) -> int:
        """What a count begun at `began` may have missed: runs held, and runs given back
        since it began (stored, perhaps after its snapshot)."""
        held = sum(self.held.values()) if job is None else self.held[job]
        late = sum(n for at, j, n in self.late if at > began and (job is None or j == job))
        return held + late

    def counted(self, began: int) -> None:
        self.counting[began] -= 1
        if self.counting[began] <= 0:
            del self.counting[began]
        oldest = min(self.counting, default=self.released)
        if self.late and self.late[0][0] <= oldest:
            self.late = [entry for entry in self.late if entry[0] > oldest]

    def take(self, job: str, runs: int) -> Hold:
        self.held[job] += runs
        return Hold(self, job, runs)

    def give_back(self, hold: Hold) -> None:
        self.held[hold.job] -= hold.runs
        if self.held[hold.job] <= 0:
            del self.held[hold.job]
        self.released += 1
        if self.counting:  # a count under way may not have seen these runs stored
            self.late.append((self.released, hold.job, hold.runs))
