"""What an ended attempt leaves behind in the supervisor's care, swept: descendants that left
its process group (setsid, daemonising) and were reparented to the supervisor, its subreaper.

At the end (or the kill) of a program its escapees are swept at once, and again shortly while
one is caught mid-exec (no environment to read yet). A double fork can hand the supervisor its
grandchild only after that, once the middle process, killed with the group, has died: orphans
are swept again a little later, by whether the attempt they name still runs, with one timer
at a time for every end, never one per run. One sweep at a time (sweeps.py), in slices on
the supervisor's loop: between two the supervisor serves its connections, however many
escapees a program left. One asked for while another goes on follows it.

An orphan that names no attempt (its environment cleared, `env -i`) came from a program that
was running when it was made. It is killed once every program running when it was first
seen has ended: not before, as it may be a live program's own helper; and not never, as the
README promises of everything a run leaves.
"""

from __future__ import annotations

from collections.abc import Mapping

from runyard.execution.spawning import Program
from runyard.execution.sweeps import Sweep, Who
from runyard.execution.timers import Timers

ESCAPED_RECHECK_S = 0.02  # an escapee caught mid-exec: looked at again this often
ESCAPED_RECHECKS = 10
STRAYS_SWEEP_S = 0.5
STRAYS_SWEEPS = 10  # at most, after a program's end (an orphan may never name its attempt)
KINDS = frozenset({"sweep", "escaped", "strays"})  # the timers this module sets


class Leftovers:
    def __init__(self, timers: Timers, programs: Mapping[int, Program]) -> None:
        self.timers = timers
        self.programs = programs  # by pid: the supervisor's running programs
        self._sweep: Sweep | None = None  # the one going on
        self._again = False  # a sweep was asked for while one went on
        self._armed = False  # a sweep of strays is due
        self._sweeps_left = 0
        self._recheck = False  # a re-check for escapees mid-exec is due
        self._rechecks_left = 0
        # the attempts of programs being killed (SIGKILL): their escapees die, though they run
        self._killing: set[str] = set()
        # orphans that name no attempt: the programs running when each was first seen, as
        # the last sweep found them, and as the one going on does
        self._unnamed: dict[Who, frozenset[int]] = {}
        self._held: dict[Who, frozenset[int]] = {}
        # as of this slice (programs start and end only between two)
        self._live: frozenset[int] = frozenset()
        self._running: set[str] = set()

    def ended(self, marker: str) -> None:
        """A program ended: its escapees now (what names `marker`, running no more, is
        doomed), and strays a little later."""
        self._rechecks_left = ESCAPED_RECHECKS
        self._sweeps_left = STRAYS_SWEEPS
        self._arm()
        self._request()

    def escaped(self, marker: str) -> None:
        """A program is being killed (SIGKILL to its group): its escapees now, with it."""
        self._killing.add(marker)
        self._rechecks_left = ESCAPED_RECHECKS
        self._request()

    @property
    def pending(self) -> bool:
        """A sweep goes on or is due: the supervisor must not leave idle before it."""
        return self._sweep is not None or self._armed or self._recheck

    def fire(self, kind: str, _key: str) -> None:
        if kind == "sweep":
            self._slice()
            return
        if kind == "escaped":
            self._recheck = False
        else:
            self._armed = False
        self._request()

    def _request(self) -> None:
        """A sweep: its first slice now, or after the one going on."""
        if self._sweep is not None:
            self._again = True
            return
        self._sweep = Sweep(self._spared, lambda: self._live, self._doomed)
        self._slice()

    def _slice(self) -> None:
        if self._sweep is None:
            return
        self._live = frozenset(self.programs)
        self._running = {p.marker for p in self.programs.values()}
        pause = self._sweep.step()
        if pause is not None:
            self.timers.add(pause, "sweep", "")
            return
        killed, self._sweep = self._sweep.killed, None
        self._unnamed, self._held = self._held, {}
        self._killing &= self._running
        if self._again:  # its first slice in the loop's next turn: one slice a turn
            self._again = False
            self._sweep = Sweep(self._spared, lambda: self._live, self._doomed)
            self.timers.add(0.0, "sweep", "")
            return
        if self._unnamed and self._rechecks_left > 0 and not self._recheck:
            self._rechecks_left -= 1
            self._recheck = True
            self.timers.add(ESCAPED_RECHECK_S, "escaped", "")
        if (killed or self._unnamed) and self._sweeps_left > 0 and not self._armed:
            self._sweeps_left -= 1
            self._arm()

    def _doomed(self, who: Who, key: str | None, seen: frozenset[int]) -> bool:
        """The verdict on an orphan, stopped: `key` the attempt it names, `seen` the programs
        running when this sweep found it."""
        if key is not None:
            return key in self._killing or key not in self._running
        first = self._held.setdefault(who, self._unnamed.get(who, seen))
        if first & self._live:  # one that may have made it runs yet
            return False
        del self._held[who]
        return True

    def _spared(self) -> set[int]:
        """The programs, and the inits of their sandboxes: children that are no orphans."""
        spared = set(self.programs)
        spared.update(p.init_pid for p in self.programs.values() if p.init_pid is not None)
        return spared

    def _arm(self) -> None:
        if not self._armed:
            self._armed = True
            self.timers.add(STRAYS_SWEEP_S, "strays", "")
