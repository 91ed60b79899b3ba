"""The Python client's streams against a server that is not what it claims (an attacker's
probe): an event that never ends (64 KiB `data:` lines, no blank line), a line small as sent
and 9 MiB once decompressed, valid lines ended by CR alone, and a server that sends the same
events and hangs up, again and again. Each is read right, or refused with a clear error;
memory is bounded, and so is the number of connections."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

import httpx
import pytest

from runyard import client_streams
from runyard.client import Client, LogPiece, LogStart, StreamEnd
from runyard.client_guards import ClientError
from runyard.client_streams import MAX_SSE_EVENT, MAX_SSE_LINE
from tests.e2e.test_client_hostile import RUN, Answer, Hostile, hostile

pytestmark = pytest.mark.e2e
__all__ = ["hostile"]  # the fixture, used by name

Make = Callable[[dict[str, Answer]], Hostile]
BACKOFF = [0.8, 1.6, 3.2, 5.0]  # the client's waits before each reconnect after the first


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The client's reconnect waits, noted instead of slept; a client that reconnects for
    ever fails the test instead of holding it."""
    waits: list[float] = []
    real, client = time.sleep, threading.get_ident()

    def sleep(seconds: float) -> None:
        if threading.get_ident() != client:
            # another thread of this process (a test's before, left to end in its own time):
            # its sleep, not a reconnect (one took 0.2 s here, shorter than any backoff)
            real(seconds)
            return
        waits.append(seconds)
        assert len(waits) < 50, "reconnected for ever"

    monkeypatch.setattr(time, "sleep", sleep)  # the client's, as the test's thread runs it
    return waits


def sse(h: BaseHTTPRequestHandler, pieces: list[bytes], encoding: str = "") -> None:
    """Answer an event stream in `pieces`, each a chunk of its own (HTTP/1.1 chunked): the
    client reads them apart, so a CRLF can be cut between its CR and its LF."""
    h.protocol_version = "HTTP/1.1"
    h.send_response(200)
    h.send_header("Content-Type", "text/event-stream")
    h.send_header("Transfer-Encoding", "chunked")
    h.send_header("Connection", "close")  # else the client would ask again on a closed socket
    if encoding:
        h.send_header("Content-Encoding", encoding)
    h.end_headers()
    try:
        for piece in pieces:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        h.wfile.write(b"0\r\n\r\n")
    except OSError:
        pass  # the client stopped reading: as it should, when it refused the stream
    h.close_connection = True


def test_an_event_that_never_ends_is_refused_as_it_grows(hostile: Make, slept: list[float]) -> None:
    """httpx_sse gathers an event's `data:` lines until its blank line: 64 KiB lines without
    one took 556 MB for 250 MiB sent (a cap on one line alone never saw them)."""
    line = b"data: " + b"A" * 2**16 + b"\n"
    lines = [b"event: log\n", *[line] * (MAX_SSE_EVENT // len(line) + 64)]  # 12 MiB
    server = hostile({"/": lambda h: sse(h, lines)})
    with Client(server.url) as c, pytest.raises(ClientError) as caught:
        list(c.stream_log(RUN))
    assert f"stream event of over {MAX_SSE_EVENT // 2**20} MiB" in str(caught.value)
    assert len(server.asked) == 1 and slept == []  # the server's fault: not asked again


def test_a_compressed_stream_is_refused_before_it_is_inflated(
    hostile: Make, slept: list[float]
) -> None:
    """Counted in the bytes as they came (gzipped), 9 MiB without a line end was 9 KiB; and
    httpx inflates each piece whole before any cap sees it. The client asks for no encoding,
    and a stream sent compressed all the same is refused, not asked again."""
    body = gzip.compress(b"event: log\ndata: " + b"x" * (MAX_SSE_LINE + 2**20))
    assert len(body) < 2**20
    server = hostile({"/": lambda h: sse(h, [body], encoding="gzip")})
    with Client(server.url) as c, pytest.raises(ClientError, match="is compressed"):
        list(c.stream_log(RUN))
    assert len(server.asked) == 1 and slept == []


def test_lines_ended_by_cr_alone_are_read_whatever_their_length(hostile: Make) -> None:
    """SSE ends a line at CR, LF or CRLF: a cap counting LF alone refused a valid CR-only
    stream after 8 MiB. A CRLF cut between two reads is one line end, not two."""
    sent: list[bytes] = []
    stream = [b'event: attempt\rdata: {"attempt": 1}\r\r']
    for n in range(MAX_SSE_LINE // 5000 + 200):  # 9 MiB of events with CR alone
        sent.append(b"%04d" % n + b"x" * 4996)
        stream.append(b"id: %d\revent: log\rdata: %s\r\r" % (5000 * len(sent), sent[-1]))
    bulk = b"".join(stream)
    pieces = [bulk[at : at + 4099] for at in range(0, len(bulk), 4099)]  # cut mid-line
    offset = 5000 * len(sent)
    mixed = b""  # each kind of line end after each kind of line, sent a byte at a time
    fields = [b"event: log", b"data: a", b"data:b", b"data:", b"data", b"data:  c"]
    for shift in range(3):
        sent.append(b"a\nb\n\n\n c")
        offset += len(sent[-1])
        for i, line in enumerate([b"id: %d" % offset, *fields, b""]):
            mixed += line + (b"\r", b"\r\n", b"\n")[(i + shift) % 3]
    pieces += [mixed[at : at + 1] for at in range(len(mixed))]
    ended = {"state": "succeeded", "attempt": 1}
    pieces.append(b"event: end\rdata: %s\r\r" % json.dumps(ended).encode())
    server = hostile({f"/v1/runs/{RUN}/logs/stream": lambda h: sse(h, pieces)})
    with Client(server.url) as c:
        got = list(c.stream_log(RUN, retries=0))
    assert got[0] == LogStart(1) and got[-1] == StreamEnd("end", ended)
    logged = [item for item in got[1:-1] if isinstance(item, LogPiece)]
    assert [p.data for p in logged] == sent and len(logged) == len(got) - 2
    assert logged[-1].end_offset == offset and len(server.asked) == 1


def test_a_server_that_sends_the_same_events_again_is_given_up(
    hostile: Make, slept: list[float]
) -> None:
    """Every event reset the reconnect budget: a server that ignores Last-Event-ID and sends
    its last events again before it hangs up was asked again for ever. Only news resets it,
    so a stream that drops often but moves on each time keeps going."""

    def events(h: BaseHTTPRequestHandler) -> None:
        after = int(h.headers.get("Last-Event-ID", "0"))
        first = after + 1 if after < 20 else 19  # from 20 on, 19 and 20 again, for ever
        sse(h, [_run_event(seq) for seq in (first, first + 1)])

    server = hostile({f"/v1/runs/{RUN}/events": events})
    seen: list[int] = []
    with Client(server.url) as c, pytest.raises(ClientError, match="brought nothing new"):
        for item in c.stream_events(RUN):
            assert isinstance(item, dict)
            seen.append(item["seq"])
    assert seen[:20] == list(range(1, 21))
    assert len(server.asked) == 10 + 5  # ten that moved on (no budget spent), then five
    assert slept == [0.4] * 10 + BACKOFF


def test_a_log_stream_that_brings_nothing_new_is_given_up(
    hostile: Make, slept: list[float]
) -> None:
    """The probe's server: each connection the `attempt` event (no id), then hung up. The
    log that moves on before that is followed, each byte once."""

    def log(h: BaseHTTPRequestHandler) -> None:
        after = int(h.headers.get("Last-Event-ID", "0"))
        pieces = [b'event: attempt\ndata: {"attempt": 1}\n\n']
        if after < 90:  # nine pieces of ten bytes, one a connection
            pieces.append(b"id: %d\nevent: log\ndata: %010d\n\n" % (after + 10, after))
        sse(h, pieces)

    server = hostile({f"/v1/runs/{RUN}/logs/stream": log})
    text: list[bytes] = []
    with Client(server.url) as c, pytest.raises(ClientError, match="brought nothing new"):
        for item in c.stream_log(RUN):
            if isinstance(item, LogPiece):
                text.append(item.data)
    assert text == [b"%010d" % n for n in range(0, 90, 10)]
    assert len(server.asked) == 9 + 5
    assert slept == [0.4] * 9 + BACKOFF


def _run_event(seq: int) -> bytes:
    body = {"seq": seq, "at": "2026-01-01T00:00:00Z", "kind": "progress", "data": {}}
    return b"id: %d\nevent: progress\ndata: %s\n\n" % (seq, json.dumps(body).encode())


def test_events_sent_again_are_handed_over_once(hostile: Make, slept: list[float]) -> None:
    """A server that ignores Last-Event-ID sends a log's first pieces again: the client's
    promise is no gap and no repeat."""
    head = [b'event: attempt\ndata: {"attempt": 1}\n\n']
    piece = [b"id: %d\nevent: log\ndata: %s\n\n" % (i + 1, b"abc"[i : i + 1]) for i in range(3)]
    end = b'event: end\ndata: {"state": "succeeded"}\n\n'
    answers = iter([head + piece[:2], head + piece + [end]])
    server = hostile({"/": lambda h: sse(h, next(answers))})
    with Client(server.url) as c:
        got = list(c.stream_log(RUN))
    assert b"".join(p.data for p in got if isinstance(p, LogPiece)) == b"abc"
    assert [p.end_offset for p in got if isinstance(p, LogPiece)] == [1, 2, 3]
    assert isinstance(got[-1], StreamEnd) and len(server.asked) == 2


@pytest.mark.parametrize("held_s", [0.0, client_streams.HELD_S], ids=["held", "dropped-at-once"])
def test_a_quiet_stream_cut_now_and_then_is_followed_while_each_connection_lasts(
    hostile: Make, slept: list[float], monkeypatch: pytest.MonkeyPatch, held_s: float
) -> None:
    """A quiet run's log stream (nothing new to send) cut on the way, again and again: a
    connection held HELD_S counts as one that moved on, so it is followed as long as the run
    runs (here: `held_s` 0, each connection long enough); one dropped at once is not."""
    monkeypatch.setattr(client_streams, "HELD_S", held_s)
    asked = iter(range(100))

    def log(h: BaseHTTPRequestHandler) -> None:
        pieces = [b'event: attempt\ndata: {"attempt": 1}\n\n']
        if next(asked) == 12:
            pieces.append(b'event: end\ndata: {"state": "succeeded", "attempt": 1}\n\n')
        sse(h, pieces)

    server = hostile({f"/v1/runs/{RUN}/logs/stream": log})
    with Client(server.url) as c:
        if held_s:
            with pytest.raises(ClientError, match="brought nothing new"):
                list(c.stream_log(RUN))
            assert len(server.asked) == 1 + 5
        else:
            assert isinstance(list(c.stream_log(RUN))[-1], StreamEnd)
            assert len(server.asked) == 13 and slept == [0.4] * 12


def test_a_stream_that_answers_and_then_says_nothing_is_given_up(
    hostile: Make, slept: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection held counts as progress only if it was not timed out: a server that
    answers and then stays silent past the stream's timeout (or a host that never answers)
    was held long enough every time, and followed for ever."""
    monkeypatch.setattr(client_streams, "SSE_SILENCE_S", 0.3)  # the read timeout
    monkeypatch.setattr(client_streams, "HELD_S", 0.1)

    def silent(h: BaseHTTPRequestHandler) -> None:
        h.protocol_version = "HTTP/1.1"
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        h.wfile.write(b"%x\r\n%s\r\n" % (8, b": hello\n"))  # answered, then nothing
        h.wfile.flush()
        threading.Event().wait(2)
        h.close_connection = True

    server = hostile({f"/v1/runs/{RUN}/logs/stream": silent})
    with Client(server.url) as c, pytest.raises(httpx.ReadTimeout):
        list(c.stream_log(RUN))
    assert len(server.asked) == 1 + 5


@pytest.mark.parametrize(
    ("event", "said"),
    [
        (b"id: 1:x\nevent: log\ndata: a\n\n", "a log event's id is not an offset"),
        (b"id: 1:1_0\nevent: log\ndata: a\n\n", "a log event's id is not an offset"),
        (b"id: 1:0\nevent: log.b64\ndata: not base64!\n\n", "is not base64"),
    ],
    ids=["id-text", "id-underscore", "b64"],
)
def test_a_log_event_the_client_cannot_place_is_a_client_error(
    hostile: Make, slept: list[float], event: bytes, said: str
) -> None:
    """A probe: an id that is no number raised a bare ValueError from the SDK, `1_0` was read
    as 10, and invalid base64 was read as nothing, its bytes lost without a word."""
    body = b'event: attempt\ndata: {"attempt": 1}\n\n' + event
    server = hostile({"/": lambda h: sse(h, [body])})
    with Client(server.url) as c, pytest.raises(ClientError, match=said):
        list(c.stream_log(RUN))


def test_a_next_offset_that_is_not_digits_is_a_client_error(hostile: Make) -> None:
    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.send_header("X-Next-Offset", "1_0")
        h.send_header("Content-Length", "1")
        h.end_headers()
        h.wfile.write(b"a")

    server = hostile({"/": answer})
    with Client(server.url) as c, pytest.raises(ClientError, match="X-Next-Offset is not an"):
        c.logs(RUN)
