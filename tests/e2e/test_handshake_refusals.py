"""A WebSocket's handshake, and a request's query and headers, refused as every request is:
422 or 404 problem JSON naming what is wrong. The probe that found them: a control character
or a bad byte in a WebSocket's query, a repeated `after`, an upgrade to a path with no
WebSocket, each a bare 403 (a close before the accept); a repeated `Last-Event-ID` read as its
first; a query value that is no UTF-8 named only `query`; a path with a slash too many
redirected to whatever host its request's Host header named."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from runyard.auth import Role, create_token

pytestmark = pytest.mark.e2e


def refusal(url: str) -> tuple[int, dict[str, object]]:
    """The status and problem a WebSocket handshake to `url` is refused with."""
    with pytest.raises(InvalidStatus) as info:
        connect(url)
    answer = info.value.response
    assert answer.headers["content-type"] == "application/problem+json", answer.body
    return answer.status_code, json.loads(answer.body)


def fields(problem: dict[str, object]) -> list[object]:
    errors = problem["errors"]
    assert isinstance(errors, list)
    return [e["field"] for e in errors]


def test_a_websocket_handshake_is_refused_with_problem_json(start_server) -> None:
    server = start_server()
    with server.client() as c:
        run = c.submit("true", {})
        server.wait_run(c, run.id)
    ws = f"ws://127.0.0.1:{server.port}/v1/runs/{run.id}/ws"

    for after in ("%00", "%FF", "%ED%A0%80"):  # a control character; bytes that are no UTF-8
        status, problem = refusal(f"{ws}?after={after}")
        assert (status, fields(problem)) == (422, ["query.after"]), after
    status, problem = refusal(f"ws://127.0.0.1:{server.port}/v1/runs/%00/ws")
    assert (status, fields(problem)) == (422, ["path"])

    # one value, given twice: refused as over HTTP, not the last one silently taken
    status, problem = refusal(f"{ws}?after=1&after=2")
    assert (status, fields(problem)) == (422, ["query.after"])
    over_http = httpx.get(f"{server.url}/v1/runs/{run.id}/events?after=1&after=2")
    assert over_http.status_code == 422
    assert over_http.json()["field"] == "query.after"

    # no WebSocket at the path (an HTTP route's, or none): not found, said so
    for path in ("/v1/jobs", "/nowhere"):
        status, problem = refusal(f"ws://127.0.0.1:{server.port}{path}")
        assert status == 404, path
        assert problem["status"] == 404

    # what is asked right is still served
    with connect(f"{ws}?after=0") as socket_:
        assert json.loads(list(socket_)[-1])["type"] == "end"
    # each refusal was sent once: sent again, it logged an error and a traceback, a line of
    # log per handshake anyone could ask for, without a token (a probe)
    said = server.log_path.read_text()
    assert "Exception in ASGI application" not in said and "Traceback" not in said, said[-2000:]


def test_a_one_value_header_given_twice_is_refused(start_server) -> None:
    server = start_server()
    with server.client() as c:
        run = c.submit("true", {})
        server.wait_run(c, run.id)
    for stream in ("events", "logs/stream"):
        twice = httpx.get(
            f"{server.url}/v1/runs/{run.id}/{stream}",
            headers=[("Last-Event-ID", "1"), ("last-event-id", "5")],
        )
        assert twice.status_code == 422, stream
        assert twice.headers["content-type"] == "application/problem+json"
        assert twice.json()["field"] == "header.Last-Event-ID"
        assert "given 2 times" in twice.json()["detail"]
    with connect(
        f"ws://127.0.0.1:{server.port}/v1/runs/{run.id}/ws?after=0",
        additional_headers=[("X-Seen", "a"), ("X-Seen", "b")],  # nobody's one-value header
    ) as socket_:
        assert json.loads(list(socket_)[-1])["type"] == "end"
    # Prefer's value is a list: its lines are read together, as ever
    both = httpx.post(
        f"{server.url}/v1/runs",
        json={"job": "true"},
        headers=[("Prefer", "respond-async"), ("Prefer", "wait=10")],
    )
    assert both.status_code == 200, both.text
    assert both.headers["preference-applied"] == "wait=10"


def test_a_path_or_query_value_that_is_no_utf8_is_refused_and_named(start_server) -> None:
    server = start_server()
    with server.client() as c:
        run = c.submit("true", {})
        server.wait_run(c, run.id)
    # decoded with U+FFFD for the bad byte, it was looked up as another path (404 naming it)
    for path in (f"/v1/runs/{run.id}/artifacts/out/%FF", f"/v1/runs/{run.id}%C3"):
        refused = httpx.get(f"{server.url}{path}")
        assert refused.status_code == 422, path
        assert refused.json()["errors"] == [{"field": "path", "message": "not valid UTF-8"}]
    status, problem = refusal(f"ws://127.0.0.1:{server.port}/v1/runs/{run.id}%FF/ws")
    assert (status, fields(problem)) == (422, ["path"])
    # a character sent as UTF-8 is a path like any other
    assert httpx.get(f"{server.url}/v1/runs/{run.id}/artifacts/%C3%A9").status_code == 404
    for url, field in (
        ("/v1/runs?job=%FF", "query.job"),
        ("/v1/runs?job=ok&state=%ED%A0%80", "query.state"),
        ("/v1/runs?%FF=1", "query"),
    ):
        refused = httpx.get(f"{server.url}{url}")
        assert refused.status_code == 422, url
        assert refused.json()["errors"][0]["field"] == field, url


def raw_answer(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_a_slash_more_or_less_is_redirected_by_path_not_to_the_host_asked(start_server) -> None:
    server = start_server()
    for asked, location in (
        (b"POST /v1/runs/?x=1", b"/v1/runs?x=1"),
        (b"GET /ui", b"/ui/"),
        (b"GET /health/", b"/health"),
    ):
        answer = raw_answer(
            server.port,
            asked + b" HTTP/1.1\r\nhost: evil.example\r\ncontent-length: 0\r\n"
            b"connection: close\r\n\r\n",
        )
        head = answer.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 307"), head
        assert b"\r\nlocation: " + location + b"\r\n" in head + b"\r\n", head
        assert b"evil.example" not in answer
    nowhere = raw_answer(
        server.port, b"GET /nowhere/ HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    assert nowhere.startswith(b"HTTP/1.1 404")


def test_a_websocket_without_a_token_is_told_so_before_its_query_is_looked_at(
    start_server, tmp_path
) -> None:
    """As every HTTP route answers 401 before it looks at the query, a handshake without a
    token is a 401, whatever its `after` (it was a 422 naming `query.after`: a probe)."""
    path = tmp_path / "tokens.toml"
    token = create_token(path, "reader", Role.READ)
    server = start_server(env={"RUNYARD_TOKENS_FILE": str(path)})
    ws = f"ws://127.0.0.1:{server.port}/v1/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV/ws"
    for query in ("?after=-1", "?after=1&after=2", ""):
        status, problem = refusal(ws + query)
        assert status == 401, (query, problem)
    # with the token, the query is the fault, and said so
    with pytest.raises(InvalidStatus) as info:
        connect(ws + "?after=-1", additional_headers=[("Authorization", f"Bearer {token}")])
    assert info.value.response.status_code == 422
