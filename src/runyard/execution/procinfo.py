"""Process identity: (pid, start time), the same number psutil's create_time() gives, read
straight from /proc (the supervisor does this once per spawn: it must be cheap); a process's
state and parent; and the process at the other end of a unix socket."""

from __future__ import annotations

import os
import socket
import struct
import time
from functools import cache


@cache
def _boot_time() -> float:
    with open("/proc/stat", "rb") as fh:  # noqa: PTH123  hot path, no pathlib
        for line in fh:
            if line.startswith(b"btime"):
                return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


@cache
def _ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


@cache
def _ns_per_tick() -> int:
    return 1_000_000_000 // _ticks()


def stat_fields(pid: int) -> list[bytes]:
    """/proc/PID/stat after the command name: state, ppid, pgrp, ... (OSError if `pid` is
    gone, ValueError if the file is not what the kernel writes)."""
    fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    try:
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    return data[data.rindex(b")") + 2 :].split()


def start_time(pid: int) -> float:
    """Seconds since the epoch at which `pid` started; raises OSError if it does not exist."""
    return _boot_time() + int(stat_fields(pid)[19]) / _ticks()


def stopped(pid: int) -> bool:
    """Whether `pid` is stopped (SIGSTOP, or a tracer's stop)."""
    return stat_fields(pid)[0] in (b"T", b"t")


def parent(pid: int) -> int:
    return int(stat_fields(pid)[1])


def children(pid: int) -> list[int]:
    """`pid`'s children, as the kernel lists them per thread (a child forked by any of its
    threads); [] if it is gone."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")  # noqa: PTH208  names, read by fd below
    except OSError:
        return found
    for tid in tasks:
        try:
            fd = os.open(f"/proc/{pid}/task/{tid}/children", os.O_RDONLY)
        except OSError:
            continue  # that thread ended meanwhile
        try:
            found.extend(int(c) for c in os.read(fd, 65536).split())
        except OSError:
            continue
        finally:
            os.close(fd)
    return found


def peer_pid(sock: socket.socket) -> int:
    """The pid of the process at the other end of a unix socket, as the kernel says
    (SO_PEERCRED: taken when it connected, or listened)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[0])


def boot_tick() -> int:
    """Now, in the clock ticks of CLOCK_BOOTTIME that /proc/PID/stat counts start times in."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) // _ns_per_tick()


def spawned_start_time(pid: int, tick_before: int, tick_after: int) -> float:
    """The start time of a child spawned between two `boot_tick()` readings. The kernel stamps
    a child with CLOCK_BOOTTIME when it forks and /proc shows that stamp in whole ticks, so
    when both readings fall in one tick that tick is its start: no read of /proc/PID/stat,
    which right after a spawn waits for the child's exec (measured: 15% of the supervisor's
    throughput). Across a tick boundary (about one spawn in a hundred) /proc decides."""
    if tick_before == tick_after:
        return _boot_time() + tick_before / _ticks()
    return start_time(pid)
