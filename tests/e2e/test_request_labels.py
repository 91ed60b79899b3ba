"""What a request may make the server keep or confuse: a method the API never serves is one
`OTHER` label in /metrics (PROPFIND and its kind on every route made it 18 times longer), and
an Idempotency-Key is one key, said once, with no space at either end (`k ` and `k` were two
keys, and of two headers the second was dropped in silence)."""

from __future__ import annotations

import socket

import pytest

from tests import web

pytestmark = pytest.mark.e2e


def raw_post(port: int, header: bytes) -> bytes:
    """A submit with `header` as it is written, and the answer's first bytes."""
    body = b'{"job": "true"}'
    head = (
        b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n%s\r\nConnection: close\r\n\r\n"
    ) % (len(body), header)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head + body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer


ODD = ("PROPFIND", "MKCOL", "SEARCH", "LOCK", "REPORT", "PURGE")


def test_methods_the_api_never_serves_are_one_label(start_server) -> None:
    server = start_server()
    with web.Client(base_url=server.url, timeout=30) as http:
        for method in ODD:
            for path in ("/v1/runs", "/v1/jobs", "/health/live", "/v1/schedules"):
                assert http.request(method, path).status_code in {400, 404, 405}
        text = http.get("/metrics").text
    assert not any(f'method="{m}"' in text for m in ODD)
    assert 'method="OTHER"' in text
    assert 'method="GET"' in text


def test_an_idempotency_key_is_one_key_without_spaces_at_its_ends(start_server) -> None:
    server = start_server()
    body = {"job": "true"}
    with web.Client(base_url=server.url, timeout=30) as http:
        trailing = raw_post(server.port, b"Idempotency-Key: k1   ")  # httpx sends none such
        assert trailing.startswith(b"HTTP/1.1 422"), trailing[:300]
        assert b"Idempotency-Key" in trailing
        twice = http.post(
            "/v1/runs", json=body, headers=[("Idempotency-Key", "k2"), ("Idempotency-Key", "k3")]
        )
        assert twice.status_code == 422 and "more than once" in twice.json()["detail"]
        first = http.post("/v1/runs", json=body, headers={"Idempotency-Key": "k 4"})
        again = http.post("/v1/runs", json=body, headers={"Idempotency-Key": "k 4"})
        assert first.status_code == 202 and again.json()["id"] == first.json()["id"]
        form = http.post(
            "/v1/runs", files={"run": (None, '{"job": "true"}')},
            headers=[("Idempotency-Key", "k5"), ("Idempotency-Key", "k6")],
        )  # fmt: skip
        assert form.status_code == 422, form.text
        assert (
            http.get("/v1/runs").json()["runs"] == [first.json()]
            or len(http.get("/v1/runs").json()["runs"]) == 1
        )  # only the one run was made
