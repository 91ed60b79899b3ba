"""Dropping a connection for good: a reset, not a close the kernel keeps trying to deliver.

asyncio's `transport.abort()` closes the descriptor; the kernel then still owns what was
queued for the peer and keeps sending it: a client that stopped reading, cut, held its
connection in FIN-WAIT-1 with megabytes unsent for minutes (measured: 20 cut log streams,
75 MiB for over 60 s), and got the stale bytes if it read later. A linger of zero first
makes the close a reset: the peer hears it, and the kernel lets go of the buffer at once."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct
import termios

_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, for 0 s
_TCP = (socket.AF_INET, socket.AF_INET6)


def reset(transport: asyncio.BaseTransport) -> None:
    """Abort `transport`, its TCP connection reset; one closed already is left as it is."""
    sock = transport.get_extra_info("socket")
    # closed: its descriptor is -1 (uvloop's socket object then raises ValueError, not OSError)
    if sock is not None and sock.family in _TCP and sock.fileno() >= 0:
        with contextlib.suppress(OSError):  # gone already: the abort alone does
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    transport.abort()  # type: ignore[attr-defined]


def socket_unsent(transport: asyncio.BaseTransport) -> int:
    """Bytes in the TCP socket's send queue its peer has not acknowledged (SIOCOUTQ): what a
    client that reads takes from, however large the kernel's buffer; 0 for another socket."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in _TCP or sock.fileno() < 0:
        return 0
    try:
        got = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    except (OSError, ValueError):  # gone meanwhile
        return 0
    return int(struct.unpack("i", got)[0])
