"""The two baselines: the asyncio floor and the physical limit (posix_spawn + reaping).

Both do what a run manager must per run: a fresh directory, a log file, a new session.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from pathlib import Path


async def _asyncio_floor(root: Path, n: int, c: int) -> float:
    sem = asyncio.Semaphore(c)

    async def one(i: int) -> None:
        async with sem:
            d = root / f"r{i}"
            d.mkdir()
            with (d / "log").open("wb") as log:
                proc = await asyncio.create_subprocess_exec(
                    "/bin/true", stdout=log, stderr=log, cwd=d, start_new_session=True
                )
                await proc.wait()

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - start)


def asyncio_floor(root: Path, n: int, c: int) -> float:
    root.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_asyncio_floor(root, n, c))


def spawn_limit(root: Path, n: int, c: int) -> float:
    """One process, posix_spawn with setsid and the log as stdout/stderr, reaping as it goes."""
    root.mkdir(parents=True, exist_ok=True)
    running = 0
    started = 0
    t0 = time.perf_counter()
    while started < n or running:
        while running < c and started < n:
            d = root / f"r{started}"
            d.mkdir()
            fd = os.open(d / "log", os.O_WRONLY | os.O_CREAT, 0o644)
            os.posix_spawn(
                "/bin/true", ["/bin/true"], {},
                file_actions=[(os.POSIX_SPAWN_DUP2, fd, 1), (os.POSIX_SPAWN_DUP2, fd, 2)],
                setsid=True,
            )  # fmt: skip
            os.close(fd)
            running += 1
            started += 1
        os.wait()
        running -= 1
    return n / (time.perf_counter() - t0)


def wake_round_trip(n: int = 5000) -> float:
    """Microseconds of CPU (both threads, user + system) that one round trip between two
    threads costs on this machine: a queue put that wakes a sleeping thread, and its answer.
    The same mechanism as the server's hand-over to its store's thread and back; a figure
    that moves with the machine's speed (on a virtual machine mostly the kernel's wake-ups),
    to read the CPU-per-run figures by."""
    there: queue.SimpleQueue[int] = queue.SimpleQueue()
    back: queue.SimpleQueue[int] = queue.SimpleQueue()

    def echo() -> None:
        for _ in range(n):
            back.put(there.get())

    thread = threading.Thread(target=echo)
    before = time.process_time()
    thread.start()
    for i in range(n):
        there.put(i)
        back.get()
    thread.join()
    return (time.process_time() - before) * 1e6 / n


def interpreter_ms(n: int = 1_000_000) -> float:
    """Milliseconds of CPU that a fixed piece of plain Python takes on this machine: n turns
    of a loop that calls a method and fills a dict, as the server's code mostly does. The
    server's CPU per run is mostly interpreted code, so it moves with this figure from one
    machine (or stretch of one) to another."""

    class Box:
        def __init__(self) -> None:
            self.seen: dict[int, int] = {}

        def add(self, i: int) -> None:
            self.seen[i & 1023] = i

    box = Box()
    before = time.process_time()
    for i in range(n):
        box.add(i)
    return (time.process_time() - before) * 1000
