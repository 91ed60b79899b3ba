"""The server's log lines leave once per turn of the event loop (cli/log_output.py)."""

from __future__ import annotations

import asyncio
import io
import logging
import threading

from runyard.cli.log_output import Handler, TurnFlushedLogger


class Recording(io.RawIOBase):
    """A raw, unbuffered stream (as stderr is under PYTHONUNBUFFERED) that takes at most
    `take` bytes per write, and remembers each write."""

    def __init__(self, take: int = 1 << 20) -> None:
        self.take = take
        self.writes: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        piece = bytes(data)[: self.take]  # type: ignore[call-overload]
        self.writes.append(piece)
        return len(piece)

    def text(self) -> bytes:
        return b"".join(self.writes)


def test_a_turns_lines_leave_in_one_write_after_the_turn_in_order() -> None:
    stream = Recording()
    logger = TurnFlushedLogger(stream)  # type: ignore[arg-type]

    async def turn() -> list[bytes]:
        for n in range(5):
            logger.msg(b"line %d" % n)
        seen_in_turn = list(stream.writes)
        await asyncio.sleep(0)  # the next turn
        return seen_in_turn

    assert asyncio.run(turn()) == []
    assert stream.writes == [b"line 0\nline 1\nline 2\nline 3\nline 4\n"]


def test_a_line_off_the_loop_is_written_at_once_and_after_what_was_held() -> None:
    stream = Recording()
    logger = TurnFlushedLogger(stream)  # type: ignore[arg-type]
    logger.msg(b"alone")
    assert stream.writes == [b"alone\n"]

    async def held_then_thread() -> None:
        logger.msg(b"on the loop")
        worker = threading.Thread(target=logger.msg, args=(b"from a thread",))
        worker.start()
        worker.join()

    asyncio.run(held_then_thread())
    assert stream.text() == b"alone\non the loop\nfrom a thread\n"


def test_a_partial_write_is_finished_and_a_closed_loop_does_not_hold_lines_back() -> None:
    stream = Recording(take=3)
    logger = TurnFlushedLogger(stream)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    # logged in the loop's last turn: the write it schedules never runs
    loop.call_soon(lambda: (logger.msg(b"first"), loop.stop()))
    loop.run_forever()
    loop.close()
    assert stream.writes == []

    async def log(line: bytes) -> None:
        logger.msg(line)

    asyncio.run(log(b"second"))  # another loop: it schedules its own write
    assert stream.text() == b"first\nsecond\n"
    assert max(len(w) for w in stream.writes) == 3


class FailsOnce(Recording):
    """Takes part of the first write, then fails the next (a disk that filled)."""

    def __init__(self) -> None:
        super().__init__(take=3)
        self.failed = False

    def write(self, data: object) -> int:
        if self.writes and not self.failed:
            self.failed = True
            raise OSError(28, "No space left on device")
        return super().write(data)


def test_a_write_that_failed_part_way_leaves_the_next_line_whole() -> None:
    stream = FailsOnce()
    logger = TurnFlushedLogger(stream)  # type: ignore[arg-type]
    logger.msg(b"abcdef")  # "abc" written, then the disk is full: no exception escapes
    stream.take = 1 << 20
    logger.msg(b'{"next": 1}')
    assert stream.text() == b'abc\n{"next": 1}\n'


def test_the_standard_librarys_records_keep_their_place() -> None:
    stream = Recording()
    logger = TurnFlushedLogger(stream)  # type: ignore[arg-type]
    stdlib = logging.getLogger("test_log_output.order")
    stdlib.propagate = False
    stdlib.addHandler(Handler(logger))

    async def turn() -> None:
        logger.msg(b"one")
        stdlib.warning("two")
        logger.msg(b"three")

    asyncio.run(turn())
    assert stream.writes == [b"one\ntwo\nthree\n"]
