"""What a program leaves behind by a double fork is killed even when the supervisor is handed
it only after the program's end was swept (the middle process still dying then)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

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
    for seconds in ("7701", "7702", "7703", "7704"):
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
        # exec) carries the marker yet, and would be killed as a named one
        "until [ $(pgrep -fc 'sleep 770[2-5]$') -ge 4 ]; do sleep 0.01; done; echo bye"
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
