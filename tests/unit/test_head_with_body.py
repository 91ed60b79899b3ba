"""An answer's head and its body in one send (cli/head_with_body.py), over a real event loop
and a real socket pair: what reaches the socket, in which sends, in which order."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from runyard.cli.head_with_body import HeadWithBody

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


async def _pair() -> tuple[HeadWithBody, socket.socket, list[bytes]]:
    """The wrapper over a real transport on one end of a socket pair (its sends recorded), and
    the other end."""
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    transport, _ = await asyncio.get_running_loop().create_connection(asyncio.Protocol, sock=ours)
    sent: list[bytes] = []
    real_write = transport.write

    def write(data: Any) -> None:
        sent.append(bytes(data))
        real_write(data)

    transport.write = write  # type: ignore[method-assign]
    return HeadWithBody(transport, asyncio.get_running_loop()), theirs, sent


async def _turn() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def test_a_head_leaves_with_its_body_in_one_send_and_other_writes_at_once() -> None:
    async def main() -> None:
        conn, peer, sent = await _pair()
        conn.write(HEAD)
        assert sent == []
        assert conn.get_write_buffer_size() == len(HEAD)
        conn.write(memoryview(b"ok"))
        assert sent == [HEAD + b"ok"]  # at once, together, not at the end of the turn
        conn.write(b"data: event\n\n")  # a stream's next write: no waiting
        assert sent[-1] == b"data: event\n\n"
        await asyncio.sleep(0.01)
        assert peer.recv(1000) == HEAD + b"okdata: event\n\n"
        peer.close()
        conn.close()

    asyncio.run(main())


def test_a_head_with_nothing_behind_it_leaves_at_the_next_callback_or_before_a_close() -> None:
    async def main() -> None:
        conn, peer, sent = await _pair()
        conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await _turn()
        assert sent == [b"HTTP/1.1 100 Continue\r\n\r\n"]  # a client waits for it
        conn.writelines([HEAD])
        conn.close()  # what was written goes before the close
        assert sent[-1] == HEAD
        assert conn.is_closing()  # the rest is the real transport's
        peer.close()

    asyncio.run(main())


def test_an_aborted_connection_sends_no_head_it_held() -> None:
    async def main() -> None:
        conn, peer, sent = await _pair()
        conn.write(HEAD)
        conn.abort()
        await _turn()
        assert sent == []
        peer.close()

    asyncio.run(main())
