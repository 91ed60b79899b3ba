"""Killing what an attempt leaves: its process group; and the means to find descendants that
escaped it (the supervisor's orphans, the attempt each names), judged and killed by sweeps.py."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
from collections.abc import Container, Iterable, Iterator

from runyard.execution.procinfo import read_whole, stat_fields

ATTEMPT_VAR = b"RUNYARD_ATTEMPT_KEY="  # the variable that names a process's attempt
PF_KTHREAD = 0x00200000  # /proc/PID/stat's flags: a kernel thread, which has no environment
SETTLE_TRIES, SETTLE_S = 20, 0.001  # an exec in progress shows none for a moment (a busy core: ms)


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def signal_members(pgid: int, sig: int, spared: Container[int]) -> int:
    """Send `sig` to every process of group `pgid` but the `spared` ones (a sandbox's bwrap
    and its init, which must outlive the program to report its end). Returns how many were
    signalled. A scan of /proc: only on terminate, never per spawn."""
    sent = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in spared:
            continue
        try:
            if int(stat_fields(int(entry.name))[2]) != pgid:  # state, ppid, pgrp, ...
                continue
            os.kill(int(entry.name), sig)
            sent += 1
        except (OSError, ValueError, IndexError):
            continue
    return sent


def attempt_of(pid: int) -> str | None:
    """The attempt `pid` names (the RUNYARD_ATTEMPT_KEY of its environment), or None if it
    names none: an empty environment, as mid-exec or after `env -i`, one without the key, or
    one it made unreadable (prctl: undumpable). OSError if it is gone."""
    try:
        environ = read_whole(f"/proc/{pid}/environ")
    except PermissionError:
        return None
    keys = [v for v in environ.split(b"\0") if v.startswith(ATTEMPT_VAR)]
    return keys[0][len(ATTEMPT_VAR) :].decode(errors="replace") if keys else None


def settled_environs(pids: Iterable[int]) -> Iterator[tuple[int, bytes]]:
    """Each process's /proc/PID/environ (those gone or unreadable left out). One that is empty
    while the process is a live one of a user is read again: a process in the middle of an
    exec shows none until the kernel has set up its new one (a scan for an attempt's key
    missed a program as its `sh` exec'd `sleep`, and a program that re-execs itself could hide
    so). All such are read again together, SETTLE_TRIES times at most, SETTLE_S apart: a scan
    waits that long at most however many processes of no environment (`env -i`) there are.
    Blocking: a thread's."""
    settling = list(pids)
    for tries_left in range(SETTLE_TRIES, -1, -1):
        still = []
        for pid in settling:
            try:
                environ = read_whole(f"/proc/{pid}/environ")
            except OSError:
                continue
            if environ or not _may_be_exec_ing(pid):
                yield pid, environ
            else:
                still.append(pid)
        settling = still
        if not settling or not tries_left:
            break
        time.sleep(SETTLE_S)
    for pid in settling:
        yield pid, b""


def _may_be_exec_ing(pid: int) -> bool:
    try:
        fields = stat_fields(pid)  # state, ppid, pgrp, session, tty, tpgid, flags, ...
        return fields[0] not in (b"Z", b"X") and not int(fields[6]) & PF_KTHREAD
    except (OSError, ValueError, IndexError):
        return False


def orphans(supervised: Container[int]) -> list[int]:
    """Our children that are not programs we spawned: reparented descendants."""
    try:
        children = [int(p) for p in read_whole(_children_file()).split()]
    except OSError:
        import psutil

        children = [c.pid for c in psutil.Process().children()]
    return [pid for pid in children if pid not in supervised]


@functools.cache
def _children_file() -> str:
    """This process's list of children (a getpid(2) once, not at every end), forgotten by a
    child this process forks."""
    me = os.getpid()
    return f"/proc/{me}/task/{me}/children"


os.register_at_fork(after_in_child=_children_file.cache_clear)
