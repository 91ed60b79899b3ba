"""Process identity: (pid, start time), the same number psutil's create_time() gives, read
straight from /proc (the supervisor does this once per spawn: it must be cheap); a process's
state, parent and children; and the process at the other end of a unix socket.

Every /proc file here is read to its end: the kernel hands out one page per read of most of
them, and a process's list of children longer than that (a probe: 11,500 children, 682 of
them in one read) was taken for all of it."""

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


PAGE = 4096  # what the kernel hands out per read of a /proc file, at most (seq_file)


def read_whole(path: str) -> bytes:
    """A /proc file read to its end (OSError if it cannot be opened or read)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 16 * PAGE):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def stat_fields(pid: int, tid: int | None = None) -> list[bytes]:
    """/proc/PID/stat after the command name: state, ppid, pgrp, ... (OSError if `pid` is
    gone, ValueError if the file is not what the kernel writes); of its thread `tid` if
    given."""
    data = read_whole(f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat")
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    return data[data.rindex(b")") + 2 :].split()


def start_time(pid: int) -> float:
    """Seconds since the epoch at which `pid` started; raises OSError if it does not exist."""
    return _boot_time() + int(stat_fields(pid)[19]) / _ticks()


def stopped(pid: int) -> bool:
    """Whether `pid` is stopped (SIGSTOP, or a tracer's stop)."""
    return stat_fields(pid)[0] in (b"T", b"t")


def threads_stopped(pid: int) -> bool:
    """Whether every thread of `pid` but its first is stopped (or ended, or gone): a stop
    lands thread by thread, and one still running may fork yet."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]  # noqa: PTH208
    except OSError:
        return True
    for tid in tids:
        try:
            if tid != pid and stat_fields(pid, tid)[0] not in (b"T", b"t", b"Z", b"X"):
                return False
        except (OSError, ValueError, IndexError):
            continue  # that thread ended meanwhile
    return True


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
            found.extend(int(c) for c in read_whole(f"/proc/{pid}/task/{tid}/children").split())
        except OSError:
            continue  # that thread ended meanwhile
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
