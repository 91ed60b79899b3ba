"""What a connection answers around the requests it carries (cli/header_timeout.py): every
request accepted is answered, in order, before whatever refuses what follows it on the same
connection; what the HTTP parser refuses is problem JSON with its reason; a head over the cap
is refused however it arrives; a client that half-closes still hears its answer."""

from __future__ import annotations

import hashlib
import json
import socket

import pytest

from tests import web

pytestmark = pytest.mark.e2e

SUBMIT = b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def _submit(body: bytes, extra: bytes = b"") -> bytes:
    return SUBMIT + extra + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


def _answers(raw: bytes) -> list[tuple[int, bytes]]:
    """(status, body) of each answer in what the connection sent until it closed."""
    found = []
    while raw.startswith(b"HTTP/1.1 "):
        head, _, rest = raw.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        found.append((int(head[9:12]), rest[:length]))
        raw = rest[length:]
    assert raw == b"", raw[:200]
    return found


def _exchange(server, data: bytes, *, half_close: bool = False) -> list[tuple[int, bytes]]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        raw = b""
        while chunk := s.recv(65536):  # the server closes after its last answer
            raw += chunk
    return _answers(raw)


def _stored(server, tag: str) -> int:
    return len(web.get(f"{server.url}/v1/runs?label=probe%3D{tag}").json()["runs"])


def test_accepted_requests_are_answered_before_what_refuses_the_rest(start_server) -> None:
    server = start_server()
    # a submit (a body of 200 KB, under the cap for bodies, over the one for heads) whose
    # read also holds the start of the next head: that next head is its own, and small
    body = json.dumps({"job": "true", "labels": {"probe": "a"}}).encode()
    big = body[:-1] + b" " * 200_000 + b"}"
    then = _submit(body, b"Connection: close\r\n")
    assert [s for s, _ in _exchange(server, _submit(big) + then)] == [202, 202]
    assert _stored(server, "a") == 2
    # a submit followed by bytes that are no HTTP: the submit's 202, then the refusal
    body = json.dumps({"job": "true", "labels": {"probe": "b"}}).encode()
    answers = _exchange(server, _submit(body) + b"\x00\x01 not http\r\n\r\n")
    assert [s for s, _ in answers] == [202, 400]
    assert json.loads(answers[1][1])["type"] == "urn:runyard:problem:malformed-http"
    assert _stored(server, "b") == 1
    # a submit waited for, then a head over the cap (by more than the one read in which it
    # began, which is not counted): the run's answer, then the 431
    body = json.dumps({"job": "true", "labels": {"probe": "c"}}).encode()
    filler = b"".join(b"X-Filler-%d: %s\r\n" % (n, b"a" * 1000) for n in range(400))
    answers = _exchange(server, _submit(body, b"Prefer: wait=30\r\n") + SUBMIT + filler)
    assert [s for s, _ in answers] == [200, 431]
    assert json.loads(answers[0][1])["state"] == "succeeded"
    assert _stored(server, "c") == 1


@pytest.mark.parametrize("pieces", [1, 2])
def test_a_head_over_the_cap_is_refused_when_its_last_read_completes_it(
    start_server, pieces: int
) -> None:
    """The read that completes a head counts too: a head of ~120 KB arriving in one or two
    reads never becomes a request."""
    server = start_server()
    body = json.dumps({"job": "true", "labels": {"probe": "d"}}).encode()
    filler = b"".join(b"X-Filler-%d: %s\r\n" % (n, b"a" * 1000) for n in range(120))
    data = _submit(body, filler)
    cut = len(data) // pieces
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        for start in range(0, len(data), cut):
            s.sendall(data[start : start + cut])
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    assert [s for s, _ in _answers(raw)] == [431]
    assert _stored(server, "d") == 0


@pytest.mark.parametrize(
    ("framing", "reason"),
    [
        (b"Content-Length: 14\r\nContent-Length: 14\r\n\r\n", "Duplicate Content-Length"),
        (b"Content-Length: abc\r\n\r\n", "Content-Length"),
        (b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
    ],
)
def test_what_the_parser_refuses_is_problem_json_with_its_reason(
    start_server, framing: bytes, reason: str
) -> None:
    server = start_server()
    answers = _exchange(server, SUBMIT + framing + b'{"job":"true"}\r\n0\r\n\r\n')
    assert [s for s, _ in answers] == [400]
    problem = json.loads(answers[0][1])
    assert problem["type"] == "urn:runyard:problem:malformed-http"
    assert reason in problem["detail"]
    assert web.get(f"{server.url}/v1/runs").json()["runs"] == []


@pytest.mark.parametrize(
    "head", [b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n",
             b"GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\n"],
    ids=["connect", "broken-absolute-uri"],
)  # fmt: skip
def test_a_request_refused_as_its_head_completes_is_answered(start_server, head: bytes) -> None:
    """A probe: `CONNECT host:port` (a target uvicorn cannot make a path of) was met by a
    closed connection and no byte: refused as its head completed, before a request was made
    of it, it was taken for a request being answered, with none to answer."""
    server = start_server()
    first = _submit(b'{"job": "true"}')
    answers = _exchange(server, first + head)
    assert [s for s, _ in answers] == [202, 400]  # the one before it answered first
    assert json.loads(answers[1][1])["type"] == "urn:runyard:problem:malformed-http"


def test_a_client_that_half_closes_after_its_submit_hears_the_answer(start_server) -> None:
    server = start_server()
    body = json.dumps({"job": "true", "labels": {"probe": "e"}}).encode()
    for query in (b"", b"?x=1"):  # the submit lane's and the declared route's
        data = _submit(body).replace(b"/v1/runs ", b"/v1/runs" + query + b" ")
        answers = _exchange(server, data, half_close=True)
        assert [s for s, _ in answers] == [202]
        run = json.loads(answers[0][1])
        assert web.get(f"{server.url}/v1/runs/{run['id']}").status_code == 200
    assert _stored(server, "e") == 2


def test_what_breaks_behind_accepted_requests_never_costs_their_answers(start_server) -> None:
    """A request refused while those before it are still being answered (its chunk framing
    broken, its head over the cap in the read that held the one before, its trailer fields
    endless, or the client's half gone in the middle of it) is refused or dropped after their
    answers: they used to be lost, or the cap missed."""
    server = start_server()
    body = json.dumps({"job": "true", "labels": {"probe": "f"}}).encode()
    waited = _submit(body, b"Prefer: wait=30\r\n")
    broken_chunk = SUBMIT + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"
    assert [s for s, _ in _exchange(server, waited + broken_chunk)] == [200, 400]
    health = b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    big = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 90_000 + b"\r\n\r\n"
    assert [s for s, _ in _exchange(server, health + big)] == [200, 431]
    trailers = b"".join(b"X-T-%d: %s\r\n" % (n, b"t" * 1000) for n in range(100))
    chunked = SUBMIT + b"Transfer-Encoding: chunked\r\n\r\n0\r\n" + trailers + b"\r\n"
    assert [s for s, _ in _exchange(server, health + chunked)] == [200, 431]
    for unfinished in (b"GET /health/live HTTP/1.1\r\nHo", SUBMIT + b"Content-Length: 50\r\n\r\n{"):
        answers = _exchange(server, waited + unfinished, half_close=True)
        assert [s for s, _ in answers] == [200]
    assert _stored(server, "f") == 3


@pytest.mark.parametrize("coding", [b"foo, chunked", b"gzip, chunked", b"gzip"])
def test_a_body_in_another_transfer_coding_is_refused_and_stores_nothing(
    start_server, coding: bytes
) -> None:
    """httptools read the chunks of `gzip, chunked` and passed on what they held as the body
    itself: a probe's `foo, chunked` submit was stored (202)."""
    server = start_server()
    body = json.dumps({"job": "true", "labels": {"probe": "te"}}).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    before = _submit(json.dumps({"job": "true", "labels": {"probe": "ok"}}).encode())
    refused = SUBMIT + b"Transfer-Encoding: " + coding + b"\r\n\r\n" + chunked
    answers = _exchange(server, before + refused)
    assert [s for s, _ in answers] == [202, 501]
    problem = json.loads(answers[1][1])
    assert problem["field"] == "header.Transfer-Encoding"
    assert problem["type"] == "urn:runyard:problem:unsupported-transfer-coding"
    assert (_stored(server, "ok"), _stored(server, "te")) == (1, 0)
    plain = SUBMIT + b"Transfer-Encoding: Chunked\r\nConnection: close\r\n\r\n" + chunked
    assert [s for s, _ in _exchange(server, plain)] == [202]
    assert _stored(server, "te") == 1


@pytest.mark.parametrize("path", [b"/v1/runs", b"/v1/batches", b"/v1/schedules"])
def test_a_body_of_the_wrong_type_is_refused_before_it_is_asked_for(
    start_server, path: bytes
) -> None:
    """`Expect: 100-continue` with a body that is no JSON: the 415 at once, never a `100
    Continue` that has the client send what will be refused (a probe: POST /v1/runs did)."""
    server = start_server()
    head = (
        b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 15\r\nExpect: 100-continue\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(head)  # and no body: a client waits for the 100 before it sends one
        first = s.recv(65536)
    assert first.startswith(b"HTTP/1.1 415 "), first[:100]
    assert b'"field":"header.Content-Type"' in first


def _then(server, first: bytes, then: bytes) -> tuple[bytes, bytes]:
    """Send `first`, read its answer, then send `then` on the same connection: (the first
    answer as sent, all the connection sends after it until it closes)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(first)
        raw = b""
        while b"\r\n\r\n" not in raw:
            raw += s.recv(65536)
        head = raw.partition(b"\r\n\r\n")[0]
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(raw) < len(head) + 4 + length:
            raw += s.recv(65536)
        try:
            s.sendall(then)
            rest = b""
            while chunk := s.recv(65536):
                rest += chunk
        except OSError:  # closed under it: nothing of `then` was read
            rest = b""
    return raw, rest


SMUGGLED = _submit(json.dumps({"job": "true", "labels": {"probe": "smuggled"}}).encode())


@pytest.mark.parametrize(
    "framing", [b"Content-Length: %d\r\n" % len(SMUGGLED), b"Transfer-Encoding: chunked\r\n"]
)
def test_a_body_behind_an_upgrade_to_another_protocol_is_refused_never_read_as_a_request(
    start_server, framing: bytes
) -> None:
    """A probe: httptools ends a request asking to switch protocols at its head. An upload
    that asked for `Upgrade: foo` was stored empty (200), and its body, read later, was
    parsed as a request of its own: a submit smuggled past whatever checked the upload."""
    server = start_server()
    head = (b"POST /v1/uploads?name=outer.bin HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/octet-stream\r\nConnection: Upgrade\r\nUpgrade: foo\r\n"
            + framing + b"\r\n")  # fmt: skip
    body = SMUGGLED if framing.startswith(b"Content") else b"%x\r\n%s\r\n0\r\n\r\n" % (
        len(SMUGGLED), SMUGGLED)  # fmt: skip
    answer, after = _then(server, head, body)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    problem = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert (problem["type"], problem["field"]) == (
        "urn:runyard:problem:unsupported-upgrade", "header.Upgrade")  # fmt: skip
    assert after == b""
    assert _stored(server, "smuggled") == 0
    for stored in (b"", SMUGGLED):  # stored as if empty, or its body whole: neither
        upload_id = hashlib.sha256(stored).hexdigest()
        assert web.get(f"{server.url}/v1/uploads/{upload_id}").status_code == 404


def test_a_request_without_a_body_asking_to_upgrade_is_answered_then_its_connection_closes(
    start_server,
) -> None:
    """Without a body the upgrade is ignored and the request answered; what follows it was
    parsed as a new request (a smuggled submit): the connection closes after the answer."""
    server = start_server()
    head = b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    answer, after = _then(server, head, SMUGGLED)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert b"connection: close" in answer.lower()
    assert after == b""
    assert _stored(server, "smuggled") == 0


def test_trailer_fields_are_never_taken_for_the_requests_headers(start_server) -> None:
    """A probe: a chunked submit's trailer fields were added to its headers and obeyed (an
    `Idempotency-Key`, a `Prefer: wait` a proxy reading the head never saw). Dropped now."""
    server = start_server()
    body = json.dumps({"job": "true", "labels": {"probe": "trailer"}}).encode()
    request = (SUBMIT + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
               + b"%x\r\n%s\r\n0\r\n" % (len(body), body)
               + b"Idempotency-Key: from-the-trailer\r\nPrefer: wait=5\r\n\r\n")  # fmt: skip
    [(status, answer)] = _exchange(server, request)
    assert status == 202, answer  # not the 200 of a wait
    assert json.loads(answer)["idempotency_key"] is None
    assert _stored(server, "trailer") == 1


@pytest.mark.parametrize(
    ("head", "status", "said"),
    [
        (b"GET /health/live HTTP/1.1\r\n\r\n", 400, "no Host"),
        (b"GET /health/live HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "Host given twice"),
        (b"GET /health/live HTTP/1.1\r\nHost: evil.example/x?y@z\r\n\r\n", 400, "not a host"),
        (b"GET /health/live HTTP/2.0\r\nHost: x\r\n\r\n", 505, "HTTP/2.0"),
        (b"GET /health/live\r\n\r\n", 505, "is not spoken here"),
    ],
)
def test_a_head_no_http_1_1_server_may_serve_is_refused(
    start_server, head: bytes, status: int, said: str
) -> None:
    """RFC 9112: a 1.1 request names its Host once, and a version this server does not speak
    is a 505. Each was served as if it were 1.1 with a Host (a probe)."""
    server = start_server()
    [(answered, body)] = _exchange(server, head)
    assert answered == status, body
    assert said in json.loads(body)["detail"]
    # HTTP/1.0 needs no Host; 1.1 with one, as an address or an IP literal, is served
    literal = b"GET /health/live HTTP/1.1\r\nHost: [::1]:80\r\nConnection: close\r\n\r\n"
    zone = literal.replace(b"[::1]", b"[fe80::1%25eth0]")  # an IPv6 address with its zone
    for fine in (b"GET /health/live HTTP/1.0\r\n\r\n", literal, zone):
        assert [s for s, _ in _exchange(server, fine)] == [200]
