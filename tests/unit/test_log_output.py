"""The server's log lines leave once per turn of the event loop (cli/log_output.py)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import socket
import threading
from types import SimpleNamespace
from typing import BinaryIO

import pytest
import uvloop

from runyard.cli.log_output import MAX_HELD_BYTES, Handler, TurnFlushedLogger
from runyard.cli.serve import _unraisable


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
    (written,) = stream.writes
    one, two, three, end = written.split(b"\n")
    assert (one, three, end) == (b"one", b"three", b"")
    line = json.loads(two)  # a JSON line like the others: it was the bare text "two"
    assert (line["event"], line["level"], line["logger"]) == ("two", "warning", stdlib.name)
    assert line["timestamp"].endswith("Z")


def test_a_standard_library_traceback_is_one_json_line() -> None:
    stream = Recording()
    logger = TurnFlushedLogger(stream)  # type: ignore[arg-type]
    stdlib = logging.getLogger("test_log_output.traceback")
    stdlib.propagate = False
    stdlib.addHandler(Handler(logger))

    async def turn() -> None:
        try:
            int("bad \x00 value")
        except ValueError:
            stdlib.exception("it failed: %s", "why")

    asyncio.run(turn())
    (written,) = stream.writes
    (line,) = written.splitlines()
    parsed = json.loads(line)
    assert parsed["event"] == "it failed: why" and parsed["level"] == "error"
    assert "ValueError: invalid literal" in parsed["exception"]


def _stalled(kind: str) -> tuple[BinaryIO, int]:
    """A stream whose reader reads nothing for now (its other end, to read later)."""
    if kind == "pipe":
        read_fd, write_fd = os.pipe()
        return os.fdopen(write_fd, "wb", buffering=0), read_fd
    ours, theirs = socket.socketpair()
    return os.fdopen(ours.detach(), "wb", buffering=0), theirs.detach()


# nowait=False: the fallback of a kernel that refuses RWF_NOWAIT (a second, non-blocking
# open of the pipe; a socket sent to with MSG_DONTWAIT), taken from the start
@pytest.mark.parametrize("nowait", [True, False], ids=["rwf_nowait", "fallback"])
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("kind", ["pipe", "socket"])
def test_a_reader_that_stalls_holds_lines_back_not_the_loop_and_hears_what_was_dropped(
    kind: str, loop: str, nowait: bool
) -> None:
    stream, reader = _stalled(kind)
    logger = TurnFlushedLogger(stream, nowait=nowait)
    lines = 3000  # 3 MB: far past what the stream and MAX_HELD_BYTES take

    async def flood_then_read() -> bytes:
        for n in range(lines):
            logger.msg(b"%d " % n + b"x" * 1000)
            if n % 100 == 0:
                await asyncio.sleep(0)  # turns pass, each write finds the stream full
        # a blocking write would never have let the loop get here: nobody reads yet; and
        # stderr itself is still blocking for whatever else writes to it
        assert os.get_blocking(stream.fileno())
        os.set_blocking(reader, False)
        got = bytearray()
        caught_up = asyncio.get_running_loop().create_future()

        def readable() -> None:
            with contextlib.suppress(BlockingIOError):
                got.extend(os.read(reader, 1 << 16))
            if b"log_lines_dropped" in got and got.endswith(b"\n"):
                caught_up.done() or caught_up.set_result(None)

        asyncio.get_running_loop().add_reader(reader, readable)
        await asyncio.wait_for(caught_up, 30)
        asyncio.get_running_loop().remove_reader(reader)
        return bytes(got)

    # were the loop blocked in a write, closing the reader would end it (EPIPE): a failure
    watchdog = threading.Timer(20, os.close, (reader,))
    watchdog.start()
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            got = runner.run(flood_then_read())
    finally:
        watchdog.cancel()
    os.close(reader)
    *kept, notice = got.rstrip(b"\n").split(b"\n")
    numbers = [int(line.split(b" ")[0]) for line in kept]
    assert numbers == list(range(len(numbers)))  # whole lines, in order, none skipped
    assert all(line.endswith(b"x" * 1000) for line in kept)
    assert len(kept) * 1000 >= MAX_HELD_BYTES  # held what the bound allows, then dropped
    said = json.loads(notice)
    assert said["event"] == "log_lines_dropped"
    assert said["count"] == lines - len(kept)


def test_after_a_stall_with_no_loop_to_watch_the_next_lines_write_again() -> None:
    """Off any loop (start-up, shutdown) nobody is told of room: each new line tries again,
    even while lines are being dropped, and the notice follows once the reader is back."""
    stream, reader = _stalled("pipe")
    logger = TurnFlushedLogger(stream)
    for n in range(1500):
        logger.msg(b"%d " % n + b"x" * 1000)  # off the loop, into a reader that reads nothing
    os.set_blocking(reader, False)
    got = bytearray()
    for n in range(10_000):
        with contextlib.suppress(BlockingIOError):
            got.extend(os.read(reader, 1 << 16))
        if b"last\n" in got:
            break
        logger.msg(b"last" if n >= 100 else b"more")  # the reader is back: these push on
    os.close(reader)
    assert b"log_lines_dropped" in got and got.endswith(b"last\n")


def test_a_line_logged_while_a_write_is_under_way_joins_it() -> None:
    """A finaliser that logs while the lock's own thread writes (the collector can run
    anywhere): its line is written after the one under way, and nothing fails."""

    class LogsOnce(Recording):
        def write(self, data: object) -> int:
            if not self.writes:
                logger.msg(b"from a finaliser")
            return super().write(data)

    stream = LogsOnce()
    logger = TurnFlushedLogger(stream)  # type: ignore[arg-type]
    logger.msg(b"outer")
    assert stream.text() == b"outer\nfrom a finaliser\n"


@pytest.mark.parametrize("kind", ["pipe", "socket"])
def test_stderr_itself_stays_blocking_and_no_descriptor_is_added(kind: str) -> None:
    """The non-blocking write is a flag of the call: whatever else writes to the same pipe
    or socket (a child, a fatal error) still waits as it expects, and lines follow fd 2."""
    stream, reader = _stalled(kind)
    before = len(os.listdir("/proc/self/fd"))
    logger = TurnFlushedLogger(stream)
    for n in range(200):
        logger.msg(b"%d " % n + b"x" * 1000)  # past what the reader's side holds
    assert os.get_blocking(stream.fileno())
    assert len(os.listdir("/proc/self/fd")) == before
    os.close(reader)
    stream.close()


@pytest.mark.parametrize("kind", ["pipe", "socket"])
def test_the_fallback_never_waits_nor_leaves_stderr_non_blocking(kind: str) -> None:
    """Without RWF_NOWAIT, under a default socket timeout (celery sets one), which a socket
    object made for stderr would take: a send would wait for it, fail, and what was held
    would be lost. Here every line arrives once the reader is back."""
    stream, reader = _stalled(kind)
    socket.setdefaulttimeout(1)
    try:
        logger = TurnFlushedLogger(stream, nowait=False)
        for n in range(300):
            logger.msg(b"%d " % n + b"x" * 1000)  # off any loop, into a reader that reads nothing
        assert os.get_blocking(stream.fileno())
        os.set_blocking(reader, False)
        got = bytearray()
        while not got.endswith(b"last\n"):
            with contextlib.suppress(BlockingIOError):
                got.extend(os.read(reader, 1 << 16))
            logger.msg(b"last")  # the reader is back: each line pushes on what is held
    finally:
        socket.setdefaulttimeout(None)
    os.close(reader)
    numbers = [int(line.split(b" ")[0]) for line in got.split(b"\n") if b"x" in line]
    assert numbers == list(range(300))


def test_the_unraisable_hook_takes_an_object_whose_repr_fails() -> None:
    """A hook that raised would have Python print around the log, straight to stderr."""

    class NoRepr:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    exc = ValueError("in a finaliser")
    args = SimpleNamespace(  # what sys.unraisablehook is given
        exc_type=ValueError, exc_value=exc, exc_traceback=None, err_msg=None, object=NoRepr()
    )
    _unraisable(args)  # raises nothing
