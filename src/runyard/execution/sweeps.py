"""One sweep of the supervisor's orphans: each stopped with all its descendants, judged by the
attempt it names, killed with its whole tree or continued; done in slices, between which the
supervisor serves its connections.

Stopped first (SIGSTOP), until a look finds no new one: a process that forks and leaves at
once, over and over, has a new pid by the time its environment is read (a probe: one such ran
its 40 s after its run ended, was cancelled, or ran as another user). Stopped, it forks no
more; the child a fork under way makes as the stop comes is its child still, listed once it
has stopped (each of its threads: a stop lands thread by thread), and stopped in turn: the
whole tree stands still before it is judged, and the tree killed is the one read (its
running descendants used to fork on between the read and the kill, a round behind each).

The cost is linear: each process is looked at a fixed number of times a round (its stat, its
children once it has stopped, an orphan's environment, its kill or continuation), and a
doomed orphan's tree is the one read while freezing, not a scan of /proc per orphan (a probe:
2,000 escapees, each such a scan, were killed at 25 a second, 80 s in which the supervisor
answered nobody: pings failed, another run's spawn was given up on). In slices, at most
SLICE_S each: a sweep of thousands leaves the supervisor answering within one.

Between slices the supervisor reaps: a pid seen in an earlier slice may be somebody else's
by the next. Each process is held by its pid and its start time, checked before it is
signalled or judged in a later slice (within one, none of ours can be reaped: an orphan is
the supervisor's child, a descendant's parent is stopped).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Container, Generator, Iterator
from dataclasses import dataclass, field

from runyard.execution.kills import attempt_of, orphans
from runyard.execution.procinfo import children, stat_fields, threads_stopped

SLICE_S = 0.01  # the longest a slice runs before the supervisor's loop turns again
FREEZE_LOOKS = 1000  # at most: a hopper is caught in a few; more wait for stops to land
FREEZE_ROUNDS = 10  # freezes and judgements, at most, while each kills something
STOP_WAIT_S = 0.001  # a look that found nothing new, only processes not stopped yet: a pause
STOPPED = (b"T", b"t")  # stopped (SIGSTOP), or by a tracer
ENDED = (b"Z", b"X")  # its children are the supervisor's now: found in the next look

Who = tuple[int, int]  # a process: its pid and start time (in ticks since boot)
# an orphan's attempt (None: it names none), the programs running when it was found: doomed?
Verdict = Callable[[Who, "str | None", frozenset[int]], bool]
# a part of a sweep: yields None to go on if the slice has time left, or a pause (the slice
# ends); returns its finding
Found = Generator[float | None, None, bool]


@dataclass
class _Held:
    """A process this round stopped (or found stopped already)."""

    start: int
    was_stopped: bool  # by somebody else: not ours to continue
    seen: frozenset[int] | None  # an orphan's: the programs running when it was found
    kids: list[int] = field(default_factory=list)  # read once it had stopped


class Sweep:
    """Steps by `step` until it returns None. `spared`: the supervisor's children that are no
    orphans (its programs, their sandboxes' inits), asked at each look; `live`: the programs
    running now; `doomed`: the verdict on each orphan, asked while it is stopped."""

    def __init__(
        self,
        spared: Callable[[], Container[int]],
        live: Callable[[], frozenset[int]],
        doomed: Verdict,
    ) -> None:
        self._spared, self._live, self._doomed = spared, live, doomed
        self.killed = 0  # orphans killed, with their trees
        self._steps = self._run()

    def step(self) -> float | None:
        """Work for one slice. Returns the delay before the next (0: the loop's next turn), or
        None once the sweep is done."""
        until = time.monotonic() + SLICE_S
        for pause in self._steps:
            if pause is not None:
                return pause
            if time.monotonic() >= until:
                return 0.0
        return None

    def _run(self) -> Iterator[float | None]:
        killed: set[int] = set()  # by this sweep: dying, not to be looked at again
        for _ in range(FREEZE_ROUNDS):
            held: dict[int, _Held] = {}
            try:
                yield from self._freeze(held, killed)
                doomed = yield from self._judge(held)
                yield from self._kill(held, doomed, killed)
            except BaseException:
                # continued at once, whatever became of the sweep (dropped, an error): never
                # left stopped for good
                for _ in self._continue(held):
                    pass
                raise
            yield from self._continue(held)
            if not doomed:
                return
            self.killed += len(doomed)
            # again: what an orphan killed leaves (a zombie's last child) is ours to look at
            # next; once the loop has reaped the killed, not to read them all again
            yield 0.0

    def _freeze(self, held: dict[int, _Held], skipped: set[int]) -> Iterator[float | None]:
        """Stop every orphan and every descendant of one, until a look finds none new and
        each has stopped and had its children read."""
        waiting: list[int] = []  # stopped, not seen stopped yet: its children unread
        ended = set(skipped)  # and zombies: nothing to stop or read
        for look in range(FREEZE_LOOKS):
            found = yield from self._stop_orphans(held, waiting, ended)
            more = yield from self._settle(held, waiting, look == FREEZE_LOOKS - 1)
            if not found and not more:
                if not waiting:
                    return
                yield STOP_WAIT_S  # only stops still to land (a loaded machine)

    def _stop_orphans(self, held: dict[int, _Held], waiting: list[int], ended: set[int]) -> Found:
        """Stop the orphans not held yet; whether there was any (generator's return value)."""
        found = False
        seen = self._live()
        for pid in orphans(self._spared()):
            if pid not in held and pid not in ended:
                found = True
                if self._stop(pid, held, seen):
                    waiting.append(pid)
                else:
                    ended.add(pid)
                yield None
        return found

    def _settle(self, held: dict[int, _Held], waiting: list[int], last: bool) -> Found:
        """Read the children of each process `waiting` that has stopped, and stop them; the
        others wait on (read as they are in the `last` look). Whether anything new was found,
        or handed to the supervisor by a process that ended (generator's return value)."""
        more = False
        still: list[int] = []
        while waiting:
            pid = waiting.pop()
            state = self._state(pid, held)
            if state is None or state in ENDED:
                more = True  # its children were handed to the supervisor: next look
                continue
            if not last and (state not in STOPPED or not threads_stopped(pid)):
                still.append(pid)
                continue
            kids = [k for k in children(pid) if k not in held]
            held[pid].kids = kids
            for kid in kids:
                more = True
                if self._stop(kid, held, None):
                    waiting.append(kid)
                yield None
        waiting.extend(still)
        return more

    def _stop(self, pid: int, held: dict[int, _Held], seen: frozenset[int] | None) -> bool:
        """SIGSTOP `pid`, held from here on; False if it has ended (or is gone)."""
        try:
            fields = stat_fields(pid)
            if fields[0] in ENDED:
                return False
            os.kill(pid, signal.SIGSTOP)
        except (OSError, ValueError, IndexError):
            return False  # gone meanwhile (its child, if any, is in the next look)
        held[pid] = _Held(int(fields[19]), fields[0] in STOPPED, seen)
        return True

    def _state(self, pid: int, held: dict[int, _Held]) -> bytes | None:
        """The state of a process held, or None if it is gone (its pid another's now)."""
        hold = held.get(pid)
        try:
            fields = stat_fields(pid)
            return fields[0] if hold is not None and int(fields[19]) == hold.start else None
        except (OSError, ValueError, IndexError):
            return None

    def _judge(self, held: dict[int, _Held]) -> Generator[None, None, list[int]]:
        """The orphans held that are doomed (generator's return value)."""
        doomed: list[int] = []
        for pid, hold in list(held.items()):
            if hold.seen is not None and self._state(pid, held) not in (None, *ENDED):
                try:
                    key = attempt_of(pid)
                except OSError:  # gone meanwhile
                    continue
                if self._doomed((pid, hold.start), key, hold.seen):
                    doomed.append(pid)
                yield None
        return doomed

    def _kill(self, held: dict[int, _Held], doomed: list[int], killed: set[int]) -> Iterator[None]:
        """SIGKILL each doomed orphan and its tree, as read while it stood still."""
        tree = list(doomed)
        while tree:
            pid = tree.pop()
            hold = held.pop(pid, None)
            if hold is None:
                continue
            tree.extend(hold.kids)
            if self._state(pid, {pid: hold}) is not None:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            yield None

    def _continue(self, held: dict[int, _Held]) -> Iterator[None]:
        """SIGCONT what was stopped here and not killed."""
        while held:
            pid, hold = held.popitem()
            if not hold.was_stopped and self._state(pid, {pid: hold}) is not None:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGCONT)
            yield None
