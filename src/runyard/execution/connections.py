"""The supervisor's clients: non-blocking JSON-line connections served from its selector."""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from runyard.execution.procinfo import parent, peer_pid
from runyard.execution.protocol import MAX_LINE, encode

MAX_CLIENT_BACKLOG = 64 * 1024 * 1024
# Servers (one at a time, each reconnecting) and a few tools: more is a flood of connections
# (any process of the supervisor's user may connect), which costs the quietest of them.
MAX_CLIENTS = 64
MAX_ANCESTRY = 64  # levels of parents looked at


@dataclass(eq=False)
class Client:
    sock: socket.socket
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    writing: bool = False  # registered for EVENT_WRITE: its output waits for the socket
    lines: int = 0  # requests it has sent
    since: float = field(default_factory=time.monotonic)


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
        self._spare = _spare_descriptor()

    def accept(self, srv: socket.socket) -> None:
        try:
            sock, _ = srv.accept()
        except BlockingIOError:
            return
        except OSError:  # out of descriptors (EMFILE, ENFILE) or memory: a flood
            self._shed(srv)
            return
        if _from_a_program(sock):
            sock.close()  # its programs are served by it, not its clients
            return
        if len(self.clients) >= MAX_CLIENTS:
            self.drop(_evictee(self.clients.values()))
        sock.setblocking(False)
        self.clients[sock.fileno()] = Client(sock)
        self.sel.register(sock, selectors.EVENT_READ, "client")

    def _shed(self, srv: socket.socket) -> None:
        """The spare descriptor given up for as long as it takes to accept one connection and
        close it: the listener's backlog drains (not a failing accept at every turn), the
        supervisor goes on (it died of EMFILE), and whoever connected is told by the close."""
        if self._spare >= 0:
            os.close(self._spare)
        with contextlib.suppress(OSError):
            sock, _ = srv.accept()
            sock.close()
        self._spare = _spare_descriptor()

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
            client.lines += 1
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


def _spare_descriptor() -> int:
    """One descriptor held back for `_shed` (-1 if even that cannot be had now)."""
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1


def _evictee(clients: Iterable[Client]) -> Client:
    """Who makes room for a new client: the one silent longest, else the newest speaker (a
    server that has spoken since it connected is the last to go)."""
    silent = [c for c in clients if not c.lines]
    if silent:
        return min(silent, key=lambda c: c.since)
    return max(clients, key=lambda c: c.since)


def _from_a_program(sock: socket.socket) -> bool:
    """Whether the peer is one of this supervisor's programs, or anything they started: the
    supervisor is their subreaper, so every such process, a double-forked one in a session
    of its own included, has it for an ancestor while it lives. Such a peer could otherwise
    spawn untracked programs, stop other runs and choose the reason recorded for their end.

    A peer gone by the time it is looked at is refused: the credentials are those of the
    process that connected, and the socket outlives it in whatever inherited it (a probe: a
    program stopped its supervisor, connected from a child that forked and exited, and its
    grandchild was served, ending another run as "self-fenced")."""
    pid, me = peer_pid(sock), os.getpid()
    for _ in range(MAX_ANCESTRY):
        if pid <= 1:
            return False
        try:
            pid = parent(pid)
        except (OSError, ValueError, IndexError):
            return True  # gone (or unreadable): whoever holds the socket now is unknown
        if pid == me:
            return True
    # deeper than any server runs below init: a program's chain of forks (a probe: 70 deep
    # was served, and stopped another run)
    return True
