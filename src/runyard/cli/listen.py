"""The server's sockets, bound before anything else starts: a port in use (or an address not
on this machine) is then one line at start, with nothing started or written, rather than an
error after the whole runtime came up on the data directory. They listen once the server
serves (uvicorn's start): a client during start-up is refused at once, as before, not held
waiting in the backlog."""

from __future__ import annotations

import contextlib
import errno
import socket
from typing import Any


class ListenError(OSError):
    """The address cannot be listened on; the message says which and why."""


def addresses(host: str, port: int) -> list[tuple[Any, ...]]:
    """What `host` names to listen on (getaddrinfo's answers), or why it names nothing."""
    try:
        return socket.getaddrinfo(
            host or None, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE,
        )  # fmt: skip
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def bind_sockets(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to every address `host` names, as the event loop's own
    create_server(host, port) would bind them (SO_REUSEADDR; an IPv6 socket IPv6 only, so
    that "::" and "0.0.0.0" are separate binds). A socket another process listens on is
    refused here, whether or not it set SO_REUSEADDR."""
    infos = addresses(host, port)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)  # not inherited by what we spawn
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise ListenError(_why(host, port, address, exc)) from None
    except BaseException:
        close(sockets)
        raise
    return sockets


def close(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.close()


def _why(host: str, port: int, address: tuple[object, ...], exc: OSError) -> str:
    where = f"{host}:{port}" if host == address[0] else f"{host}:{port} ({address[0]})"
    said = (exc.strerror or str(exc)).lower()
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: {said}: another process holds the port; stop it, or "
            "choose another --port"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: {said}: no interface of this machine has it (--host)"
    if exc.errno == errno.EACCES and port < 1024:
        return f"cannot listen on {where}: {said}: a port under 1024 needs privileges"
    return f"cannot listen on {where}: {said}"
