"""What an ended attempt leaves behind in the supervisor's care, swept: descendants that left
its process group (setsid, daemonising) and were reparented to the supervisor, its subreaper.

At the end (or the kill) of a program its escapees are looked for at once by the attempt's
marker, and again shortly while one is caught mid-exec (no environment to read yet). A double
fork can hand the supervisor its grandchild only after that, once the middle process, killed
with the group, has died: orphans are swept again a little later, by whether the attempt
they name still runs, with one timer at a time for every end, never one per run.

An orphan that names no attempt (its environment cleared, `env -i`) came from a program that
was running when it was made. It is killed once every program running when it was first
seen has ended: not before, as it may be a live program's own helper; and not never, as the
README promises of everything a run leaves.
"""

from __future__ import annotations

from collections.abc import Mapping

from runyard.execution import kills
from runyard.execution.spawning import Program
from runyard.execution.timers import Timers

ESCAPED_RECHECK_S = 0.02  # an escapee caught mid-exec: looked at again this often
ESCAPED_RECHECKS = 10
STRAYS_SWEEP_S = 0.5
STRAYS_SWEEPS = 10  # at most, after a program's end (an orphan may never name its attempt)
KINDS = frozenset({"escaped", "strays"})  # the timers this module sets


class Leftovers:
    def __init__(self, timers: Timers, programs: Mapping[int, Program]) -> None:
        self.timers = timers
        self.programs = programs  # by pid: the supervisor's running programs
        self._armed = False  # a sweep of strays is due
        self._sweeps_left = 0
        self._rechecks = 0  # escapees' re-checks due
        # orphans that name no attempt: the programs running when each was first seen
        self._unnamed: dict[int, frozenset[int]] = {}

    def ended(self, marker: str) -> None:
        """A program ended: its escapees now, and strays a little later."""
        self.escaped(marker, 0)
        self._sweeps_left = STRAYS_SWEEPS
        self._arm()

    @property
    def pending(self) -> bool:
        """A sweep or a re-check is due: the supervisor must not leave idle before it."""
        return self._armed or self._rechecks > 0

    def escaped(self, marker: str, tries: int = 0) -> None:
        if kills.kill_escaped(marker, self._spared()) and tries < ESCAPED_RECHECKS:
            self._rechecks += 1
            self.timers.add(ESCAPED_RECHECK_S, "escaped", f"{tries + 1} {marker}")

    def fire(self, kind: str, key: str) -> None:
        if kind == "escaped":
            self._rechecks -= 1
            tries, marker = key.split(" ", 1)
            self.escaped(marker, int(tries))
            return
        self._armed = False
        running = {p.marker for p in self.programs.values()}
        killed, unnamed = kills.kill_strays(running, self._spared())
        killed += self._unnamed_ended(unnamed)
        if (killed or self._unnamed) and self._sweeps_left > 0:
            self._sweeps_left -= 1
            self._arm()

    def _spared(self) -> set[int]:
        """The programs, and the inits of their sandboxes: children that are no orphans."""
        spared = set(self.programs)
        spared.update(p.init_pid for p in self.programs.values() if p.init_pid is not None)
        return spared

    def _unnamed_ended(self, unnamed: list[int]) -> int:
        """Kill the orphans naming no attempt whose possible programs have all ended."""
        live = frozenset(self.programs)
        self._unnamed = {pid: self._unnamed.get(pid, live) for pid in unnamed}
        doomed = [pid for pid, seen in self._unnamed.items() if not seen & live]
        for pid in doomed:
            kills.kill_tree(pid)
            del self._unnamed[pid]
        return len(doomed)

    def _arm(self) -> None:
        if not self._armed:
            self._armed = True
            self.timers.add(STRAYS_SWEEP_S, "strays", "")
