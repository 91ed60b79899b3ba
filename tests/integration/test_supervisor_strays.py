"""What a program leaves behind by a double fork is killed even when the supervisor is handed
it only after the program's end was swept (the middle process still dying then)."""

from __future__ import annotations

import asyncio

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
