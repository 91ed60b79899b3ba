"""Any process of the supervisor's user can connect to its socket: a flood of connections costs
the flood, never the supervisor (a probe: 20,000 connections made its accept fail with
EMFILE, the supervisor died, and every run it supervised was lost)."""

from __future__ import annotations

import socket
import sys

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


PEER = r"""
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b'{"op": "list", "req": 1}\n')
print("answer:", s.recv(65536))
"""


async def test_a_program_speaking_to_its_supervisor_is_not_heard(
    sup: Harness,  # noqa: F811
) -> None:
    """A probe: a program (it runs as the supervisor's user) connected to the socket, spawned
    an untracked program, stopped another run's and chose the reason recorded for its end.
    A peer that is one of the supervisor's programs, or anything they started (the
    supervisor is their subreaper), is not served."""
    socket_path = str(sup.data_dir / SOCKET_NAME)
    direct = await sup.spawn("p1.1", [sys.executable, "-c", PEER, socket_path])
    assert direct["ok"], direct
    # a grandchild: the shell's child (it is not the last command, so not exec'ed)
    nested = await sup.spawn(
        "p2.1", ["sh", "-c", f'{sys.executable} -c "$0" "$1"; true', PEER, socket_path]
    )
    assert nested["ok"], nested
    for _ in range(2):
        await sup.next_exit()
    for key in ("p1.1", "p2.1"):
        said = (sup.data_dir / f"{key}.log").read_text()
        # closed unheard: an empty answer, or the peer's send or read cut off
        assert '"ok"' not in said and "attempts" not in said, said
    assert (await sup.client.request({"op": "ping"}))["ok"]  # the server's connection is


# The connecting process is gone before the supervisor looks at it (its supervisor stopped
# meanwhile, by the program itself); the socket lives on in its child, which speaks.
GONE_PEER = r"""
import os, signal, socket, sys
supervisor = os.getppid()
heard, told = os.pipe()  # read to its end: the heir has spoken and gone
os.kill(supervisor, signal.SIGSTOP)
try:
    connector = os.fork()
    if connector == 0:
        s = socket.socket(socket.AF_UNIX)
        s.connect(sys.argv[1])
        if os.fork() == 0:  # the heir: waits for its parent to be reaped, then speaks
            os.kill(os.getppid(), signal.SIGKILL)
            import time; time.sleep(1)
            s.settimeout(5)
            try:
                s.sendall(b'{"op": "list", "req": 1}\n')
                print("answer:", s.recv(65536), flush=True)
            except OSError as exc:
                print("cut:", exc, flush=True)
            os._exit(0)
        import time; time.sleep(60)
    os.close(told)
    os.waitpid(connector, 0)  # gone: its pid is nobody's while the supervisor is stopped
finally:
    os.kill(supervisor, signal.SIGCONT)
while os.read(heard, 1):
    pass
"""


async def test_a_socket_whose_connecting_program_is_gone_is_not_heard(
    sup: Harness,  # noqa: F811
) -> None:
    """A probe: a program stopped its supervisor, connected from a child that then ended, and
    let that child's own child speak on the socket: the connecting pid was gone, which was
    read as "nothing to serve anyway", and the heir was served (it stopped another run, as
    self-fenced). Whoever holds a socket whose connecting process is gone is not heard."""
    socket_path = str(sup.data_dir / SOCKET_NAME)
    started = await sup.spawn("p3.1", [sys.executable, "-c", GONE_PEER, socket_path])
    assert started["ok"], started
    await sup.next_exit()
    said = (sup.data_dir / "p3.1.log").read_text()
    assert "answer:" in said or "cut:" in said, said  # the heir spoke
    assert '"ok"' not in said and "attempts" not in said, said
    assert (await sup.client.request({"op": "ping"}))["ok"]  # the server's connection is


# A chain of forks deeper than the walk up a peer's parents looked: the deepest speaks.
DEEP_PEER = r"""
import os, socket, sys
for _ in range(int(sys.argv[2])):
    child = os.fork()
    if child:
        os.waitpid(child, 0)
        os._exit(0)
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
try:
    s.connect(sys.argv[1])
    s.sendall(b'{"op": "list", "req": 1}\n')
    print("answer:", s.recv(65536), flush=True)
except OSError as exc:
    print("cut:", exc, flush=True)
"""


async def test_a_program_deeper_than_the_walk_up_its_parents_is_not_heard(
    sup: Harness,  # noqa: F811
) -> None:
    """A review: the walk up a peer's parents gave up after 64 and served it, so a program's
    descendant 70 forks deep listed every attempt and stopped another run. A peer whose
    chain ends neither at the supervisor nor at init within the walk is refused."""
    socket_path = str(sup.data_dir / SOCKET_NAME)
    started = await sup.spawn("p4.1", [sys.executable, "-c", DEEP_PEER, socket_path, "70"])
    assert started["ok"], started
    await sup.next_exit()
    said = (sup.data_dir / "p4.1.log").read_text()
    assert "answer:" in said or "cut:" in said, said  # the deepest spoke
    assert '"ok"' not in said and "attempts" not in said, said
