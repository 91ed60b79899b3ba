"""What a program leaves behind by a double fork is killed even when the supervisor is handed
it only after the program's end was swept (the middle process still dying then)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.integration.test_supervisor import Harness, sup  # noqa: F401  the fixture
from tests.support import processes_of, wait_for

pytestmark = pytest.mark.anyio

# the probe's: `( ... &)` exits at once, `setsid` leaves the group; the grandchild is the
# supervisor's only once the middle shell, killed with the program's group, has died
LEAVER = "sleep 1000 & setsid sleep 1001 & (setsid sh -c 'sleep 1002' &); echo bye"


async def test_a_double_forked_grandchild_is_killed_after_its_program_ends(
    sup: Harness,  # noqa: F811
) -> None:
    """Left running for good by about one program in twenty, before."""
    keys = [f"d{i}.1" for i in range(60)]
    for key in keys:
        reply = await sup.spawn(key, ["sh", "-c", LEAVER])
        assert reply["ok"], reply
    for _ in keys:
        await sup.next_exit()
    left = await asyncio.to_thread(
        wait_for, lambda: not processes_of(sup.data_dir), 15, "every leftover killed"
    )
    assert left


# forks, and the parent leaves at once, over and over: never the same pid for long. Every
# generation holds the FIFO open (the test sees them all gone as its end of file).
HOPPER = """
import os, sys, time
fifo, flag = sys.argv[1], sys.argv[2]
if os.fork() == 0:
    os.setsid()
    os.open(fifo, os.O_WRONLY)
    open(flag, "w").close()
    begun = time.monotonic()
    while time.monotonic() - begun < 120:
        if os.fork():
            os._exit(0)
    os._exit(0)
while not os.path.exists(flag):
    time.sleep(0.01)
"""


# the same, each generation lingering a little after its fork: the orphan the supervisor
# finds is an old generation, and the newest ones, forking on, are its descendants
LINGERING_HOPPER = HOPPER.replace(
    "os._exit(0)\n    os._exit", "time.sleep(0.05)\n            os._exit(0)\n    os._exit"
)


@pytest.mark.parametrize("hopper", [HOPPER, LINGERING_HOPPER], ids=["leaving", "lingering"])
async def test_a_descendant_that_forks_away_from_its_pid_over_and_over_dies_with_its_run(
    sup: Harness,  # noqa: F811
    tmp_path: Path,
    hopper: str,
) -> None:
    """A probe: a program's descendant that forks and leaves at once, over and over, had a
    new pid by the time each sweep read its environment, and ran on after its run ended (its
    40 s), after a cancel, and under another user. One whose generations linger: what it
    forked since the orphan was stopped went on forking while the orphan's tree was killed."""
    fifo, flag = tmp_path / "held", tmp_path / "hopping"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        reply = await sup.spawn("hop.1", [sys.executable, "-c", hopper, str(fifo), str(flag)])
        assert reply["ok"], reply
        await sup.next_exit()
        assert flag.exists()  # it hopped before its program ended

        def all_gone() -> bool:
            try:
                return os.read(reader, 1) == b""  # no writer left: every generation died
            except BlockingIOError:
                return False

        await asyncio.to_thread(wait_for, all_gone, 15, "the hopper killed")
    finally:
        os.close(reader)


def _sleeping(seconds: str) -> list[psutil.Process]:
    """Live `sleep SECONDS` processes (an unmarked escapee has no other mark to find it by)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["cmdline"] == ["sleep", seconds] and proc.status() != "zombie":
                found.append(proc)
    return found


@pytest.fixture
def unnamed_sleeps() -> Iterator[None]:
    yield
    for seconds in ("7701", "7702", "7703", "7704", "7706"):
        for proc in _sleeping(seconds):
            with contextlib.suppress(psutil.Error):
                proc.kill()


async def test_escapees_that_name_no_attempt_die_once_every_program_that_may_own_them_ended(
    sup: Harness,  # noqa: F811
    unnamed_sleeps: None,
) -> None:
    """`env -i` and an unset marker leave an escapee nothing to tell its attempt by; it used to
    outlive its run for good. Its program is one of those running when it was first seen."""
    # a program that keeps running, with a helper of its own that must live as long as it
    keeper = await sup.spawn("k.1", ["sh", "-c", "env -i setsid sleep 7701 & exec sleep 1000"])
    assert keeper["ok"], keeper
    await asyncio.to_thread(wait_for, lambda: _sleeping("7701"), 15, "the keeper's helper")
    leaver = (
        "env -i setsid sleep 7702 & env -u RUNYARD_ATTEMPT_KEY setsid sleep 7703 & "
        "(env -i setsid sh -c 'sleep 7704' &); setsid sleep 7705 & "
        # gone only once they are sleeping: an escapee still on its way (`env` before its
        # exec) carries the marker yet, and would be killed as a named one; `^`: `env -i
        # setsid sleep 7702` itself ends so, and was counted (a flake on a loaded machine)
        "until [ $(pgrep -fc '^sleep 770[2-5]$') -ge 4 ]; do sleep 0.01; done; echo bye"
    )
    reply = await sup.spawn("l.1", ["sh", "-c", leaver])
    assert reply["ok"], reply
    assert (await sup.next_exit())["key"] == "l.1"
    # the marked escapee goes at once; the unnamed ones may be the keeper's: they wait
    await asyncio.to_thread(wait_for, lambda: not _sleeping("7705"), 15, "the marked escapee")
    assert _sleeping("7701") and _sleeping("7702")

    await sup.client.request({"op": "signal", "key": "k.1", "reason": "cancel"})
    assert (await sup.next_exit())["key"] == "k.1"
    for seconds in ("7701", "7702", "7703", "7704"):
        await asyncio.to_thread(
            wait_for, lambda s=seconds: not _sleeping(s), 15, f"the unnamed sleep {seconds}"
        )


# A supervisor that leaves after 0.2 s idle, shorter than the first sweep of strays: its one
# program leaves an escapee naming no attempt (found only by that sweep), then the server goes.
IDLE_BEFORE_SWEEP = """
import json, socket, sys
from pathlib import Path
from runyard.execution.protocol import SOCKET_NAME
from runyard.execution.supervisor import Supervisor
from runyard.execution.supervisor_process import become_subreaper

data = Path(sys.argv[1])
become_subreaper()
sup = Supervisor(data, 0.2, False)
sup.listen()
sup.install_signals()
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.connect(str(data / SOCKET_NAME))
spawn = {
    "op": "spawn", "req": 1, "key": "u.1", "cwd": str(data), "mkdirs": [],
    "argv": ["sh", "-c", "env -i setsid sleep 7706 & sleep 0.3; echo bye"],
    "env": {"PATH": "/usr/bin:/bin", "RUNYARD_ATTEMPT_KEY": "u.1"},
    "log": str(data / "u.1.log"), "exit": str(data / "u.1.exit"),
}
server.sendall(json.dumps(spawn).encode() + b"\\n")
server.close()  # gone before the program ends: idle once it has
sup.serve_forever()
"""


def test_an_idle_supervisor_leaves_only_after_sweeping_what_its_last_program_left(
    tmp_path: Path, unnamed_sleeps: None
) -> None:
    """It used to leave 0.2 s after the program's end, before the sweep due at 0.5 s: the
    escapee, handed to init, ran on for good."""
    done = subprocess.run(
        [sys.executable, "-c", IDLE_BEFORE_SWEEP, str(tmp_path)],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "u.1.exit").read_text())["exit_code"] == 0
    assert not _sleeping("7706")


# A supervisor whose lease timer comes due with a program that has ended but is not reaped yet
# (stopped past the deadline, it can read the timer before the SIGCHLD): the loop is stepped by
# hand so that the exit is waiting, unread, when the timer fires.
ENDED_BEFORE_FENCE = """
import json, socket, sys, time
from pathlib import Path
from runyard.execution.protocol import SOCKET_NAME
from runyard.execution.supervisor import Supervisor
from runyard.execution.supervisor_process import become_subreaper

data = Path(sys.argv[1])
become_subreaper()
sup = Supervisor(data, 5.0, False)
sup.listen()
sup.install_signals()
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.connect(str(data / SOCKET_NAME))
spawn = {
    "op": "spawn", "req": 1, "key": "f.1", "cwd": str(data), "mkdirs": [],
    "argv": ["sh", "-c", "sleep 0.2"], "env": {"PATH": "/usr/bin:/bin"},
    "log": str(data / "f.1.log"), "exit": str(data / "f.1.exit"),
    "lease": {"token": "t1", "until": time.time() + 0.5, "grace_s": 1.0},
}
server.sendall(json.dumps(spawn).encode() + b"\\n")
while "f.1" not in sup.by_key:  # its spawn read and made; nothing else is read from here on
    for key, mask in sup.sel.select(1):
        sup.dispatch(key, mask)
time.sleep(1.0)  # it ends (0.2 s), its lease's deadline passes (0.5 s): neither is read
sup.fire_timers(time.monotonic())
sup.reap()
"""


def test_a_program_that_ended_before_its_lease_timer_fired_is_not_fenced(
    tmp_path: Path,
) -> None:
    """A probe: a supervisor stopped past its lease deadline, its program exiting 0 meanwhile,
    fenced that program once continued (the timer read before the exit): the attempt was
    recorded killed by the fence, lost, and run again. What ended ends as it did."""
    done = subprocess.run(
        [sys.executable, "-c", ENDED_BEFORE_FENCE, str(tmp_path)],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "f.1.exit").read_text())
    assert (record["exit_code"], record["killed_by"]) == (0, None), record
