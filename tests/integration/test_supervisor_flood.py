"""Any process of the supervisor's user can connect to its socket: a flood of connections costs
the flood, never the supervisor (a probe: 20,000 connections made its accept fail with
EMFILE, the supervisor died, and every run it supervised was lost)."""

from __future__ import annotations

import socket

import psutil
import pytest

from runyard.execution.protocol import SOCKET_NAME
from tests.integration.test_supervisor import Harness, sup  # noqa: F401  the fixture
from tests.support import supervisors_of

pytestmark = pytest.mark.anyio
MAX_CLIENTS = 64  # connections.py's


async def test_a_flood_of_silent_connections_leaves_the_supervisor_serving(
    sup: Harness,  # noqa: F811
) -> None:
    running = await sup.spawn("keep.1", ["sleep", "60"])
    assert running["ok"], running
    (supervisor,) = supervisors_of(sup.data_dir)
    flood = []
    for _ in range(MAX_CLIENTS * 4):
        c = socket.socket(socket.AF_UNIX)
        c.connect(str(sup.data_dir / SOCKET_NAME))
        flood.append(c)
    try:
        # served as ever: the server's connection spoke, the flood's never did
        assert (await sup.client.request({"op": "ping"}))["ok"]
        listed = await sup.client.request({"op": "list"})
        assert [a["key"] for a in listed["attempts"]] == ["keep.1"]
        sockets = len(psutil.Process(supervisor.pid).net_connections("unix"))
        assert sockets <= MAX_CLIENTS + 8  # the flood's were closed, not held
        assert supervisor.is_running()
    finally:
        for c in flood:
            c.close()
    assert psutil.pid_exists(running["pid"])  # its program untouched
