"""A spawned program's start time, derived from the clock around its spawn, is exactly the one
/proc gives (which recovery later compares against to tell the program from a reused pid)."""

from __future__ import annotations

import subprocess

from runyard.execution import procinfo


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
