"""`POST /v1/runs` has a fast path in front of its declared route (api/fast_submit.py): the
two must answer alike, and whatever the fast path does not take must reach the declared route
with its body intact."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from starlette.types import Receive, Scope, Send

from runyard.api.middleware.request_context import RequestContextMiddleware
from runyard.auth import Role, create_token
from tests.inprocess import FakedServer, faked


@pytest.fixture
def server(
    tmp_path: Path, write_job: Callable[[str, str], Path], jobs_dir: Path
) -> Iterator[tuple[FakedServer, dict[Role, str]]]:
    write_job("true", 'command = ["true"]\n[params.n]\ntype = "int"\ndefault = 1\n')
    tokens_file = tmp_path / "tokens.toml"
    tokens = {role: create_token(tokens_file, role.name.lower(), role) for role in Role}
    with faked(tmp_path, jobs_dir, tokens_file=tokens_file) as srv:
        yield srv, {role: f"Bearer {token}" for role, token in tokens.items()}


def _shape(body: dict[str, object]) -> dict[str, object]:
    """What must match between two answers for different runs."""
    varying = {"id", "created_at", "idempotency_key"}
    return {k: v for k, v in body.items() if k not in varying}


def test_the_fast_path_and_the_declared_route_answer_alike(
    server: tuple[FakedServer, dict[Role, str]],
) -> None:
    srv, auth = server
    body = {"job": "true", "params": {"n": 7}, "labels": {"team": "cfd"}, "priority": 3}
    fast = srv.post("/v1/runs", json=body, headers={"Authorization": auth[Role.SUBMIT]})
    # an Idempotency-Key is the declared route's to handle: this one goes the long way
    declared = srv.post("/v1/runs", json=body, headers={
        "Authorization": auth[Role.SUBMIT], "Idempotency-Key": "k-1",
    })  # fmt: skip
    assert fast.status_code == declared.status_code == 202
    assert fast.headers["location"] == f"/v1/runs/{fast.json()['id']}"
    assert fast.headers["content-type"] == declared.headers["content-type"]
    assert _shape(fast.json()) == _shape(declared.json())
    assert srv.get(fast.headers["location"], headers={"Authorization": auth[Role.READ]}).json()[
        "params"
    ] == {"n": 7}


@pytest.mark.parametrize(
    ("headers", "body", "status", "field"),
    [
        ({}, b'{"job": "true"}', 401, None),  # no token: the same guard as the declared route
        ({"Authorization": "READ"}, b'{"job": "true"}', 403, None),
        ({"Authorization": "SUBMIT"}, b'{"job": "true", "params": {"n": "x"}}', 422, "n"),
        ({"Authorization": "SUBMIT"}, b'{"job": "true", "extra": 1}', 422, "extra"),
        ({"Authorization": "SUBMIT"}, b'{"job": ', 422, None),
        (
            {"Authorization": "SUBMIT", "Content-Type": "text/plain"},
            b'{"job": "true"}',
            415,
            "header.Content-Type",
        ),
        (
            {"Authorization": "SUBMIT", "Content-Encoding": "br"},
            b'{"job": "true"}',
            415,
            "header.Content-Encoding",
        ),
        (
            {"Authorization": "SUBMIT"},
            b'{"job": "true", "priority": 1, "priority": 2}',
            422,
            "body.priority",
        ),
        ({"Authorization": "SUBMIT", "Prefer": "x" * 201}, b'{"job": "true"}', 422, "prefer"),
        ({"Authorization": "SUBMIT"}, b'{"job": "nope"}', 404, "job"),
        # JSON's own types only: pydantic's lax mode took these as 5 and 1
        ({"Authorization": "SUBMIT"}, b'{"job": "true", "priority": "5"}', 422, "priority"),
        ({"Authorization": "SUBMIT"}, b'{"job": "true", "priority": true}', 422, "priority"),
    ],
)
def test_what_the_fast_path_refuses_is_answered_as_documented(
    server: tuple[FakedServer, dict[Role, str]],
    headers: dict[str, str],
    body: bytes,
    status: int,
    field: str | None,
) -> None:
    srv, auth = server
    sent = {"Content-Type": "application/json", **headers}
    if "Authorization" in sent:
        sent["Authorization"] = auth[Role[sent["Authorization"]]]
    resp = srv.post("/v1/runs", content=body, headers=sent)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    if field is not None:
        assert field in resp.text


def test_a_body_sent_in_chunks_is_read_whole(server: tuple[FakedServer, dict[Role, str]]) -> None:
    """Chunked transfer: the fast path reads every piece of the body before parsing it."""
    srv, auth = server

    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b'{"job": "tr', b'ue", "params": {"n"', b": 41}}"):
            yield piece

    resp = srv.post("/v1/runs", content=pieces(), headers={
        "Authorization": auth[Role.SUBMIT], "Content-Type": "application/json",
    })  # fmt: skip
    assert resp.status_code == 202, resp.text
    read = srv.get(resp.headers["location"], headers={"Authorization": auth[Role.READ]})
    assert read.json()["params"] == {"n": 41}


def test_a_plain_submission_takes_the_lane_and_is_counted_as_any_request(
    server: tuple[FakedServer, dict[Role, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The submit lane (api/middleware/submit_lane.py) answers a plain submission before the
    middleware stack; it still carries its request id, and is counted under its route."""
    srv, auth = server
    entered: list[str] = []
    through = RequestContextMiddleware.__call__

    async def spy(
        self: RequestContextMiddleware, scope: Scope, receive: Receive, send: Send
    ) -> None:
        entered.append(scope["path"])
        await through(self, scope, receive, send)

    monkeypatch.setattr(RequestContextMiddleware, "__call__", spy)
    plain = {"Authorization": auth[Role.SUBMIT], "X-Request-ID": "lane-1"}
    resp = srv.post("/v1/runs", json={"job": "true"}, headers=plain)
    assert resp.status_code == 202, resp.text
    assert resp.headers["x-request-id"] == "lane-1"
    assert entered == []  # the lane answered it
    keyed = srv.post("/v1/runs", json={"job": "true"}, headers={**plain, "Idempotency-Key": "k"})
    assert keyed.status_code == 202
    assert entered == ["/v1/runs"]  # the long way, for what the lane does not take
    metrics = srv.get("/metrics", headers={"Authorization": auth[Role.ADMIN]}).text
    counted = 'runyard_http_requests_total{method="POST",route="/v1/runs",status="202"} 2.0'
    assert counted in metrics
