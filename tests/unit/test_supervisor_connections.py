"""The supervisor's connections: a server dropped mid-burst gets nothing more carried out."""

from __future__ import annotations

import selectors
import socket

from runyard.execution import connections
from runyard.execution.connections import Client, Connections


def test_requests_after_a_drop_in_the_same_read_are_not_carried_out(monkeypatch) -> None:
    monkeypatch.setattr(connections, "MAX_CLIENT_BACKLOG", 10)  # the second reply overflows it
    served: list[bytes] = []
    with selectors.DefaultSelector() as sel:
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        conns: Connections

        def handle(client: Client, line: bytes) -> None:
            served.append(line)
            conns.send(client, {"reply": line.decode()})  # never read: the backlog grows

        conns = Connections(sel, handle, dropped=lambda: None)
        conns.clients[ours.fileno()] = client = Client(ours)
        sel.register(ours, selectors.EVENT_READ, "client")
        theirs.sendall(b"one\ntwo\nthree\n")
        conns.read(client)
        theirs.close()
    assert served == [b"one"]  # its reply overflowed the backlog: "two", "three" never ran
    assert conns.clients == {}
