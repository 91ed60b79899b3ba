"""Killing what an attempt leaves: its process group, and descendants that escaped it."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
from collections.abc import Callable, Container
from pathlib import Path

from runyard.execution.procinfo import children, stat_fields, stopped

ATTEMPT_VAR = b"RUNYARD_ATTEMPT_KEY="  # the variable that names a process's attempt
FREEZE_LOOKS = 1000  # at most: each look reads one small file (a hopper is caught in a few)
FREEZE_ROUNDS = 10  # freezes and judgements, at most, while each kills something


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


def kill_escaped(marker: str, supervised: Container[int]) -> int:
    """SIGKILL descendants that left the program's group (setsid, daemonising). They were
    reparented to us, the subreaper; their environment still names the attempt. Returns how
    many could not be told yet: a process in the middle of an exec shows an empty
    environment for a moment, so the caller looks again shortly."""
    return len(_kill_orphans(lambda key: key == marker, supervised)[1])


def kill_strays(running: Container[str], supervised: Container[int]) -> tuple[int, list[int]]:
    """SIGKILL orphans whose attempt is not running any more: descendants reparented to us
    only after their attempt's end was swept (a double fork whose middle process was still
    alive then). Returns how many were killed, for the caller to look again (their
    descendants may be reparented to us next), and the orphans that name no attempt (their
    environment empty or cleared: `env -i`), which the caller judges otherwise."""
    killed, unnamed = _kill_orphans(lambda key: key is not None and key not in running, supervised)
    return killed, unnamed


def kill_tree(pid: int) -> None:
    """SIGKILL a process and its descendants (read before the first is killed)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        victims = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return
    for victim in victims:
        with contextlib.suppress(psutil.Error):
            victim.kill()


def _kill_orphans(
    doomed: Callable[[str | None], bool], supervised: Container[int]
) -> tuple[int, list[int]]:
    """SIGKILL, with its descendants, each orphan whose attempt (the RUNYARD_ATTEMPT_KEY of
    its environment) is `doomed`: (how many were killed, the orphans that name no attempt:
    an empty environment, as mid-exec or after `env -i`, or one without the key). Judged
    frozen, the others continued after."""
    killed, unnamed = 0, list[int]()
    for _ in range(FREEZE_ROUNDS):
        # again while a round kills: what an orphan killed leaves (a zombie's last child) is
        # ours to look at next
        frozen, below = _frozen_orphans(supervised)
        try:
            more, unnamed = _judge(frozen, doomed)
        finally:
            for pid, was_stopped in (*frozen.items(), *below.items()):
                if not was_stopped:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGCONT)
        killed += more
        if not more:
            break
    return killed, unnamed


def _frozen_orphans(supervised: Container[int]) -> tuple[dict[int, bool], dict[int, bool]]:
    """Our orphans and all their descendants, each stopped (SIGSTOP) until a look finds no
    new one: (orphans, descendants), pid -> whether it was stopped already. A process that
    forks and leaves at once, over and over, has a new pid by the time its environment is
    read: it outlived every sweep of its run (a probe: one such ran its 40 s after its run
    ended, was cancelled, or ran as another user). Stopped, it forks no more; the child it
    made just before it was stopped is its child still, and is stopped in the next look: the
    whole tree stands still before it is judged, and kill_tree reads it whole (its running
    descendants used to fork on between the read and the kill, a round behind each time)."""
    frozen: dict[int, bool] = {}
    below: dict[int, bool] = {}
    for _ in range(FREEZE_LOOKS):
        fresh = [pid for pid in orphans(supervised) if pid not in frozen]
        fresh_below = [
            child for pid in (*frozen, *below) for child in children(pid)
            if child not in below and child not in frozen
        ]  # fmt: skip
        if not fresh and not fresh_below:
            break
        for pid, into in (*((p, frozen) for p in fresh), *((p, below) for p in fresh_below)):
            try:
                was_stopped = stopped(pid)
                os.kill(pid, signal.SIGSTOP)
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile (its child, if any, is in the next look)
            into[pid] = was_stopped
    return frozen, below


def _judge(frozen: dict[int, bool], doomed: Callable[[str | None], bool]) -> tuple[int, list[int]]:
    killed, unnamed = 0, []
    for pid in frozen:
        try:
            with Path(f"/proc/{pid}/environ").open("rb") as fh:
                environ = fh.read()
        except PermissionError:  # it made itself undumpable (prctl): it names nothing
            unnamed.append(pid)
            continue
        except OSError:  # gone meanwhile
            continue
        keys = [v for v in environ.split(b"\0") if v.startswith(ATTEMPT_VAR)]
        if not keys:
            unnamed.append(pid)
        elif doomed(keys[0][len(ATTEMPT_VAR) :].decode(errors="replace")):
            killed += 1
            kill_tree(pid)
            frozen[pid] = True  # dead: not to be continued
    return killed, unnamed


def orphans(supervised: Container[int]) -> list[int]:
    """Our children that are not programs we spawned: reparented descendants."""
    try:
        fd = os.open(_children_file(), os.O_RDONLY)
        try:
            children = [int(p) for p in os.read(fd, 65536).split()]
        finally:
            os.close(fd)
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
