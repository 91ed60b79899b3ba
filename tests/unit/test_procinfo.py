"""A spawned program's start time, derived from the clock around its spawn, is exactly the one
/proc gives (which recovery later compares against to tell the program from a reused pid)."""

from __future__ import annotations

import subprocess
import sys

from runyard.execution import procinfo
from runyard.execution.executor import same_process


def test_the_start_time_bracketed_by_the_spawn_is_the_one_proc_reports() -> None:
    children: list[tuple[subprocess.Popen[bytes], float]] = []
    try:
        for _ in range(200):
            before = procinfo.boot_tick()
            child = subprocess.Popen(["/bin/true"], start_new_session=True)
            derived = procinfo.spawned_start_time(child.pid, before, procinfo.boot_tick())
            children.append((child, derived))
        # unreaped, each is still there (a zombie) for /proc to be asked
        assert all(derived == procinfo.start_time(c.pid) for c, derived in children)
    finally:
        for child, _ in children:
            child.wait()


def test_across_a_tick_boundary_proc_decides() -> None:
    child = subprocess.Popen(["/bin/true"])
    try:
        tick = procinfo.boot_tick()
        assert procinfo.spawned_start_time(child.pid, tick - 5, tick) == procinfo.start_time(
            child.pid
        )
    finally:
        child.wait()


def test_a_process_is_its_pid_and_its_start_time_never_its_pid_alone() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        start = procinfo.start_time(child.pid)
        assert same_process(child.pid, start)
        assert not same_process(child.pid, start - 1)  # the pid, reused by somebody else
        assert not same_process(child.pid, None)
        assert not same_process(None, start)
    finally:
        child.kill()
        child.wait()
    assert not same_process(child.pid, start)  # reaped: gone


# Forks N children that wait on a pipe, says how many of them it finds among its own children
# (kills.orphans, the supervisor's read), then waits for the test to have looked.
MANY_CHILDREN = """
import os, sys
from runyard.execution import kills
read, write = os.pipe()
for _ in range(int(sys.argv[1])):
    if os.fork() == 0:
        os.close(write)
        os.read(read, 1)  # until the parent is done
        os._exit(0)
os.close(read)
print(len(kills.orphans(())), flush=True)
sys.stdin.read()
os.close(write)
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
"""


def test_a_list_of_children_longer_than_a_page_is_read_whole() -> None:
    """The kernel hands out a page per read of /proc/PID/task/TID/children: one read found 682
    of 11,500 children, and the supervisor left the rest of its orphans unswept. 1,200 pids
    of four digits or more are over a page."""
    many = 1200
    with subprocess.Popen(
        [sys.executable, "-c", MANY_CHILDREN, str(many)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as parent:  # fmt: skip
        assert parent.stdin is not None and parent.stdout is not None
        own = int(parent.stdout.readline())  # once every child is forked
        # another's list (procinfo, a sweep's), and its own (kills.orphans, the supervisor's)
        assert (len(procinfo.children(parent.pid)), own) == (many, many)
