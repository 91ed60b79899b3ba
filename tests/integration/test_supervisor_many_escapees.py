"""A program that leaves thousands of escapees: all of them die with its run, and the
supervisor serves on while they are swept (in slices, between which it answers)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import select
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from tests.integration.test_supervisor import Harness, sup  # noqa: F401  the fixture

pytestmark = pytest.mark.anyio

ESCAPEES = 1500
# the escapees' `sleep`, one for each test: how the fixture finds any a failed test left
SLEEPS = {"named": "7721", "cleared": "7722"}

# The probe's: each child leaves the group and session (setsid) and forks the escapee, which
# execs `sleep` (its environment kept, or cleared: `named` or not), and says its pid before
# it leaves; the program ends once every one of them has, their escapees the supervisor's.
LEAVER = """
import os, sys
many, named, seconds = int(sys.argv[1]), sys.argv[2] == "named", sys.argv[3]
for _ in range(many):
    if os.fork() == 0:
        os.setsid()
        pid = os.fork()
        if pid == 0:
            os.execve("/bin/sleep", ["sleep", seconds], dict(os.environ) if named else {})
        os.write(1, b"%d\\n" % pid)
        os._exit(0)
for _ in range(many):
    os.wait()
"""


class Ends:
    """The escapees' ends, as the kernel tells them: a pidfd of each (readable once it has
    died; one gone already counts as ended)."""

    def __init__(self, pids: list[int]) -> None:
        self.fds: list[int] = []
        self.poller = select.poll()
        self.gone = 0
        for pid in pids:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                self.gone += 1
                continue
            self.fds.append(fd)
            self.poller.register(fd, select.POLLIN)

    def living(self) -> int:
        return len(self.fds) - len(self.poller.poll(0))

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


@contextlib.contextmanager
def ends_of(pids: list[int]) -> Iterator[Ends]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, len(pids) + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    ends = Ends(pids)
    try:
        yield ends
    finally:
        ends.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _living(pids: list[int], seconds: str) -> list[int]:
    """The escapees still there, by pid: a `sleep` of theirs, not a zombie."""
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if proc.cmdline() == ["sleep", seconds] and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(pid)
    return found


@pytest.fixture
def escapee_sleeps(named: str) -> Iterator[str]:
    yield SLEEPS[named]
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["cmdline"] == ["sleep", SLEEPS[named]]:
                proc.kill()


@pytest.mark.parametrize("named", ["named", "cleared"])
async def test_thousands_of_escapees_die_while_the_supervisor_serves_on(
    sup: Harness,  # noqa: F811
    escapee_sleeps: str,
    named: str,
) -> None:
    """A probe: 2,000 escapees were killed at 25 a second, a scan of /proc for each; for 70 of
    those 80 s the supervisor answered no ping, and another run's spawn was given up on. With
    their environment kept, they were all killed before the program's end was even told."""
    argv = [sys.executable, "-c", LEAVER, str(ESCAPEES), named, escapee_sleeps]
    reply = await sup.spawn("l.1", argv)
    assert reply["ok"], reply
    assert (await sup.next_exit())["key"] == "l.1"
    pids = [int(line) for line in (sup.data_dir / "l.1.log").read_text().split()]
    assert len(pids) == ESCAPEES
    with ends_of(pids) as ends:
        # another run, started at once: before the last escapee is killed
        second = await sup.spawn("s.1", ["true"])
        assert second["ok"], second
        assert ends.living(), "the second run started only once every escapee was killed"
        # and the supervisor answers all along, until the last has died
        deadline = time.monotonic() + 20
        while living := ends.living():
            answer = await sup.client.ping(5)
            assert answer["ok"], answer
            assert time.monotonic() < deadline, f"{living} escapees live on"
    assert (await sup.next_exit())["key"] == "s.1"
    assert await asyncio.to_thread(_living, pids, escapee_sleeps) == []
