"""Bounded work per request: bodies capped while they stream, no body read before the caller
is known, request heads cut after a deadline, and no page loading anything from elsewhere."""

from __future__ import annotations

import json
import re
import select
import socket
import time
from pathlib import Path

import httpx
import pytest

from runyard.auth import Role, create_token
from tests import web
from tests.support import ServerProcess, wait_for

pytestmark = pytest.mark.e2e


def _uploads_kept(server) -> list[Path]:
    """Every upload's file left under the data directory, those still incoming too."""
    uploads = server.data_dir / "uploads"
    kept = [p for p in uploads.rglob("*") if p.is_file()] if uploads.exists() else []
    return [p for p in kept if ".refs" not in p.parts]


def _answer(sock: socket.socket) -> bytes:
    answer = b""
    while chunk := sock.recv(65536):  # the server closes after answering
        answer += chunk
    return answer


def test_chunked_body_is_cut_at_the_cap_while_it_streams(start_server) -> None:
    server = start_server(env={"RUNYARD_MAX_BODY_KB": "64"})
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(
            b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        # the cap and one byte past it (nothing more, so the server has read all we sent
        # when it closes); the body's last chunk is never sent
        for chunk in [b"x" * 8192] * 8 + [b"x"]:
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        answer = _answer(s)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    problem = json.loads(answer.partition(b"\r\n\r\n")[2])
    # the same problem as a body announced over the cap (refused unread)
    announced = web.post(
        f"{server.url}/v1/runs", content=b"x" * (64 * 1024 + 1),
        headers={"content-type": "application/json"},
    )  # fmt: skip
    assert announced.status_code == 413
    assert problem == announced.json()
    assert problem["type"] == "urn:runyard:problem:body-too-large"
    assert "max_body_kb" in problem["detail"]
    assert web.get(f"{server.url}/v1/runs").json()["runs"] == []


def test_no_body_is_read_before_authentication(start_server, tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens.toml"
    token = create_token(tokens_file, "submitter", Role.SUBMIT)
    server = start_server(env={"RUNYARD_TOKENS_FILE": str(tokens_file)})
    for auth in (b"", b"Authorization: Bearer not-a-token\r\n"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            s.sendall(
                b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n" + auth + b"\r\n"
            )  # a chunked body announced, not one byte of it sent
            answer = _answer(s)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert b"www-authenticate: Bearer" in answer.lower().replace(b"bearer", b"Bearer")
    ok = web.post(
        f"{server.url}/v1/runs", json={"job": "true"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert ok.status_code == 202


def test_slow_request_heads_are_cut(start_server) -> None:
    server = start_server(env={"RUNYARD_HEADER_TIMEOUT_S": "0.5"})
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as slow:
        slow.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")  # never finished
        silent = socket.create_connection(("127.0.0.1", server.port), timeout=60)
        with silent:  # connected, nothing sent at all
            assert _answer(slow) == b""  # closed by the server, unanswered
            assert _answer(silent) == b""
    # a whole request is served as ever, and so is a second one on the same connection
    with web.Client(base_url=server.url) as client:
        assert client.get("/health/live").status_code == 200
        assert client.get("/health/live").status_code == 200


def test_request_heads_over_the_cap_are_refused_and_nothing_is_stored(start_server) -> None:
    server = start_server()
    filler = b"".join(b"X-Filler-%d: %s\r\n" % (n, b"a" * 500) for n in range(200))  # ~100 KiB
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        head = b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        s.sendall(head)
        for start in range(0, len(filler), 4096):  # in pieces, never a whole head
            try:
                s.sendall(filler[start : start + 4096])
            except (BrokenPipeError, ConnectionResetError):
                break  # refused and closed while we were still sending
        answer = _answer(s)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    problem = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert problem["type"] == "urn:runyard:problem:head-too-large"
    assert problem["limit"] == 64 * 1024
    assert web.get(f"{server.url}/v1/runs").json()["runs"] == []
    # a head under the cap, then a body far over it in the same send, then a second request on
    # the same connection: none is a head too large
    body = json.dumps({"job": "true", "params": {"x": "a" * 200_000}}).encode()
    big_head = b"".join(b"X-Filler-%d: %s\r\n" % (n, b"a" * 500) for n in range(100))
    with web.Client(base_url=server.url) as client:
        refused = client.post(
            "/v1/runs", content=body,
            headers={"content-type": "application/json", **_headers(big_head)},
        )  # fmt: skip
        assert refused.status_code == 422  # its params, not its size
        assert client.post("/v1/runs", json={"job": "true"}).status_code == 202


def test_what_is_not_a_head_never_counts_toward_the_cap(start_server) -> None:
    """A body answered before it was read (a 404) is read past and dropped, not counted as the
    next head; nor is a request's head kept from the cap by the one before still running."""
    server = start_server()
    body = b"x" * 200_000
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(
            b"POST /v1/nope HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: %d\r\n\r\n%s"
            % (len(body), body)
            + b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        answers = _answer(s)
    assert answers.startswith(b"HTTP/1.1 404"), answers[:200]
    assert answers.count(b"HTTP/1.1 200") == 1 and b" 431 " not in answers
    # a stream running on the connection: a second request's endless head is read and dropped,
    # never parsed or answered inside the stream's answer; the client leaving ends both
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\n")
        for n in range(400):  # ~200 KiB of headers, never ended
            s.sendall(b"X-Filler-%d: %s\r\n" % (n, b"a" * 500))
        s.shutdown(socket.SHUT_WR)
        answer = _answer(s)  # the server closed the connection, stream and all
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b" 431 " not in answer  # no answer written into the stream's


def _headers(raw: bytes) -> dict[str, str]:
    return dict(line.decode().split(": ", 1) for line in raw.split(b"\r\n") if line)


def test_a_client_gone_mid_body_is_not_a_server_error(start_server) -> None:
    """A client that left mid-body (with an Idempotency-Key too, which sends the body on to
    the declared route once it is read, a multipart one, an upload) gets what the declared
    route answers then: a 400, logged as such, with no error and no traceback."""
    server = start_server()
    multipart = b"Content-Type: multipart/form-data; boundary=B\r\n"
    for extra, body in (
        (b"Content-Type: application/json\r\n", b'{"job":'),
        (b"Content-Type: application/json\r\nIdempotency-Key: k1\r\n", b'{"job":'),
        (multipart, b'--B\r\nContent-Disposition: form-data; name="run"\r\n\r\n{"job":'),
    ):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            s.sendall(
                b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n" + extra
                + b"\r\n" + body
            )  # then gone, hundreds of bytes short  # fmt: skip
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"PUT /v1/uploads HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab")

    def requests() -> list[dict[str, object]] | None:
        lines = [json.loads(line) for line in Path(server.log_path).read_text().splitlines()
                 if line.startswith("{")]  # fmt: skip
        seen = [e for e in lines if e.get("event") == "request"
                and e.get("route") in ("/v1/runs", "/v1/uploads")]  # fmt: skip
        return lines if len(seen) == 4 else None

    lines = wait_for(requests, what="the four requests logged")
    runs = [e for e in lines if e.get("event") == "request"
            and e.get("route") in ("/v1/runs", "/v1/uploads")]  # fmt: skip
    assert [e["status"] for e in runs] == [400, 400, 400, 400]
    assert [e for e in lines if e.get("level") == "error"] == []
    assert web.get(f"{server.url}/v1/runs").json()["runs"] == []


def test_a_stalled_body_is_answered_408_and_a_slow_one_is_read_whole(start_server) -> None:
    """While the server waits for more of a body, nothing for the header timeout ends the
    request (408, problem JSON, the connection closed); a body that keeps coming, however
    slowly, is read whole."""
    server = start_server(env={"RUNYARD_HEADER_TIMEOUT_S": "1"})
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as stalled:
        stalled.sendall(
            b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" + b'{"job":'
        )  # 993 bytes owed, never sent
        answer = _answer(stalled)  # and the server closed the connection
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"RUNYARD_HEADER_TIMEOUT_S" in answer
    assert b'"type":"urn:runyard:problem:body-stalled"' in answer
    # a plain submission whose body never starts: the submit lane's own wait (submit_lane.py)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as never:
        never.sendall(
            b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Request-ID: never-1\r\nContent-Length: 15\r\n\r\n"
        )
        answer = _answer(never)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"application/problem+json" in answer and b"x-request-id: never-1" in answer
    assert b'"type":"urn:runyard:problem:body-stalled"' in answer
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as slow:
        body = b'{"job": "true"}'
        slow.sendall(
            b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        for byte in body:
            time.sleep(0.1)  # the client's pace: 1.5 s in all, past the timeout
            slow.sendall(bytes([byte]))
        assert _answer(slow).startswith(b"HTTP/1.1 202")
    assert len(web.get(f"{server.url}/v1/runs").json()["runs"]) == 1


def test_docs_and_dashboard_load_nothing_from_elsewhere(start_server) -> None:
    server = start_server()
    for page in ("/docs", "/redoc", "/ui/"):
        resp = web.get(f"{server.url}{page}", follow_redirects=True)
        if resp.status_code == 404:
            continue  # a page that is not served loads nothing
        assert resp.status_code == 200, page
        sources = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", resp.text)
        assert sources, page
        outside = [s for s in sources if re.match(r"^(?:[a-z]+:)?//", s, re.I)]
        assert outside == [], (page, outside)
        for source in sources:  # and everything it names is served here
            if source.startswith(("data:", "#")):
                continue
            asset = web.get(httpx.URL(str(resp.url)).join(source))
            assert asset.status_code == 200, (page, source)


def test_an_answer_with_no_body_reaches_a_client_that_half_closed(start_server) -> None:
    """A HEAD's answer is a head alone (held for a body that never comes, cli/head_with_body.py);
    a client that sends its request and shuts its side (nc -N, HTTP/1.0 tools) still gets it."""
    server = start_server()
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            s.sendall(b"HEAD /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
            assert _answer(s).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("token", [False, True])
def test_a_content_length_padded_past_what_int_reads_is_its_value(
    start_server, tmp_path: Path, token: bool
) -> None:
    """int() refuses a string of over 4300 digits, whatever its value, and zeros may pad a
    Content-Length that far: such a length is read as the number it is (a 500 before), on the
    submit lane, the whole stack (no token: 401) and the uploads alike."""
    tokens_file = tmp_path / "tokens.toml"
    env = {"RUNYARD_TOKENS_FILE": str(tokens_file)} if token else {}
    auth = b""
    if token:
        auth = (
            b"Authorization: Bearer %s\r\n"
            % create_token(tokens_file, "submitter", Role.SUBMIT).encode()
        )
    server = start_server(env=env)
    length = b"0" * 4990 + b"15"
    targets = ((b"/v1/runs", b'{"job": "true"}'), (b"/v1/uploads?name=x.bin", b"fifteen bytes!!"))
    for path, body in targets:
        for sent in {auth, b""}:
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
                s.sendall(
                    b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Connection: close\r\n%sContent-Length: %s\r\n\r\n%s"
                    % (path, sent, length, body)
                )
                answer = _answer(s)
            expected = {b"401"} if token and not sent else {b"201", b"202"}
            assert answer.split(b" ", 2)[1] in expected, (path, sent, answer[:300])


@pytest.mark.parametrize(
    ("target", "content_type", "start"),
    [
        (b"/v1/uploads?name=a.bin", b"application/octet-stream", b"ten bytes!"),
        (b"/v1/runs", b"multipart/form-data; boundary=XyZ",
         b'--XyZ\r\nContent-Disposition: form-data; name="run"\r\n\r\n{"job": "true"}\r\n'),
    ],
)  # fmt: skip
def test_a_stalled_upload_is_answered_408_and_nothing_of_it_is_kept(
    start_server, target: bytes, content_type: bytes, start: bytes
) -> None:
    """Uploads and multipart submissions have size caps of their own, not the body cap; a
    body of theirs that stalls ends the same way (it held the connection, and a file being
    written, for ever), and what it brought is discarded."""
    server = start_server(env={"RUNYARD_HEADER_TIMEOUT_S": "1"})
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as stalled:
        stalled.sendall(
            b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: 100000\r\n\r\n%s"
            % (target, content_type, start)
        )  # most of it owed, never sent
        answer = _answer(stalled)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b"RUNYARD_HEADER_TIMEOUT_S" in answer
    assert _uploads_kept(server) == []
    assert web.get(f"{server.url}/v1/runs").json()["runs"] == []


def test_the_openapi_document_names_the_protocols_own_answers(start_server) -> None:
    """431 (a head over the cap) can answer any request, 408 (a stalled body) any that takes
    a body: the document says so, as problem JSON, as the server answers them."""
    server = start_server()
    doc = web.get(f"{server.url}/openapi.json").json()
    ops = [op for item in doc["paths"].values() for op in item.values() if isinstance(op, dict)]
    with_body = [op for op in ops if "requestBody" in op]
    assert with_body  # submits, batches, uploads, schedules, chat completions
    for op in ops:
        assert "application/problem+json" in op["responses"]["431"]["content"], op["operationId"]
        assert ("408" in op["responses"]) == (op in with_body), op["operationId"]
    # the OpenAI-compatible route answers its errors in OpenAI's shape, a stall too
    chat = doc["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert chat["408"]["content"] == chat["422"]["content"]
    assert "application/problem+json" not in chat["408"]["content"]


def _trickled(server: ServerProcess, first: bytes, bound_s: float) -> bytes:
    """The answer to a request sent `first`, then a byte every quarter second until it is
    answered (or `bound_s` passes)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=bound_s) as slow:
        slow.sendall(first)
        deadline = time.monotonic() + bound_s
        while time.monotonic() < deadline and not select.select([slow], [], [], 0.25)[0]:
            slow.sendall(b"x")
        return _answer(slow)


def test_a_fast_start_buys_no_long_trickle(start_server) -> None:
    """A probe: averaged since the body began, 48 KB sent at once held an upload (its
    connection, its file, its share of the quota) 200 s while a byte came every 4 s; 100 MB
    would have held it for days. What came long ago counts less and less: the trickle after
    a burst is cut within a few idle times' halvings (here 60 KB bought 250 s before)."""
    server = start_server(env={"RUNYARD_HEADER_TIMEOUT_S": "1"})
    head = (
        b"PUT /v1/uploads?name=a.bin HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n"
    )
    answer = _trickled(server, head + b"x" * 60_000, bound_s=60)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b"240 bytes/s" in answer
    assert _uploads_kept(server) == []


@pytest.mark.parametrize(
    ("target", "content_type"),
    [(b"/v1/uploads?name=a.bin", b"application/octet-stream"), (b"/v1/runs", b"application/json")],
)
def test_a_body_that_trickles_is_answered_408(
    start_server, target: bytes, content_type: bytes
) -> None:
    """A byte now and then never stalls, and would hold the connection (and an upload's file)
    for ever: past twice the idle time, a body must average MIN_BODY_RATE (240 bytes/s)."""
    server = start_server(env={"RUNYARD_HEADER_TIMEOUT_S": "1"})
    head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: 100000\r\n\r\n"
    answer = _trickled(server, head % (target, content_type), bound_s=20)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b"240 bytes/s" in answer
    assert _uploads_kept(server) == []
