"""The supervisor's clients: non-blocking JSON-line connections served from its selector."""

from __future__ import annotations

import contextlib
import selectors
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runyard.execution.protocol import MAX_LINE, encode

MAX_CLIENT_BACKLOG = 64 * 1024 * 1024


@dataclass(eq=False)
class Client:
    sock: socket.socket
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    writing: bool = False  # registered for EVENT_WRITE: its output waits for the socket


class Connections:
    """Every connected server. Each complete line goes to `handle`; `dropped` runs after a
    client is gone (the supervisor may become idle)."""

    def __init__(
        self,
        sel: selectors.BaseSelector,
        handle: Callable[[Client, bytes], None],
        dropped: Callable[[], None],
    ) -> None:
        self.sel = sel
        self.handle = handle
        self.dropped = dropped
        self.clients: dict[int, Client] = {}
        self.pending: set[Client] = set()

    def accept(self, srv: socket.socket) -> None:
        with contextlib.suppress(BlockingIOError):
            sock, _ = srv.accept()
            sock.setblocking(False)
            self.clients[sock.fileno()] = Client(sock)
            self.sel.register(sock, selectors.EVENT_READ, "client")

    def ready(self, fd: int, mask: int) -> None:
        """The selector says client `fd` can be written to or read from."""
        client = self.clients.get(fd)
        if client is None:
            return
        if mask & selectors.EVENT_WRITE:
            self.flush(client)
        if mask & selectors.EVENT_READ:
            self.read(client)

    def drop(self, client: Client) -> None:
        self.clients.pop(client.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(client.sock)
        client.sock.close()
        self.dropped()

    def read(self, client: Client) -> None:
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.drop(client)
            return
        client.inbuf += data
        fd = client.sock.fileno()
        while (nl := client.inbuf.find(b"\n")) >= 0:
            line = bytes(client.inbuf[:nl])
            del client.inbuf[: nl + 1]
            self.handle(client, line)
            if self.clients.get(fd) is not client:
                # dropped while it was being served (its backlog overflowed): nobody would
                # hear the replies to the rest, so nothing more of it is carried out
                return
        if len(client.inbuf) > MAX_LINE:
            self.drop(client)

    def send(self, client: Client, message: dict[str, Any]) -> None:
        """Queued, and sent by `flush_pending` at the end of the supervisor's turn: one send
        (one wake-up of the server) for all a turn's replies and exits — each send was a
        wake-up that could take the CPU from the supervisor mid-burst."""
        client.outbuf += encode(message)
        if len(client.outbuf) > MAX_CLIENT_BACKLOG:
            self.drop(client)  # it stopped reading; it will reconcile from the exit files
            return
        if not client.writing:  # else the selector says when the socket takes more
            self.pending.add(client)

    def flush_pending(self) -> None:
        """Send what the turn queued (a client dropped meanwhile is skipped)."""
        for client in self.pending:
            if self.clients.get(client.sock.fileno()) is client:
                self.flush(client)
        self.pending.clear()

    def flush(self, client: Client) -> None:
        try:
            sent = client.sock.send(client.outbuf)
            del client.outbuf[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.drop(client)
            return
        writing = bool(client.outbuf)
        if writing != client.writing:  # one epoll_ctl only when the interest changes
            client.writing = writing
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if writing else 0)
            with contextlib.suppress(KeyError, ValueError):
                self.sel.modify(client.sock, events, "client")

    def broadcast(self, message: dict[str, Any]) -> None:
        for client in list(self.clients.values()):
            self.send(client, message)
