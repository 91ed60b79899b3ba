"""HTTP behaviour that needs no program, in-process: the auth matrix of every route and role,
who `/v1/me` says you are, and pagination of the run list (cursor, limit, filters)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runyard.auth import Role, create_token
from tests.auth_matrix import OPENAI_ROUTES, matrix, refusal_detail
from tests.inprocess import FakedServer, faked
from tests.support import wait_for

PUBLIC = {"/health/live", "/health/ready", "/health", "/metrics", "/openapi.json", "/docs",
          "/docs/oauth2-redirect", "/redoc"}  # fmt: skip
# Streams that never end by themselves: the transport in-process reads a whole answer, so
# for them only the refusals are checked here (tests/e2e/test_security.py reads them open).
ENDLESS = {"/v1/events"}


@pytest.fixture
def secured(
    tmp_path: Path, write_job: Callable[[str, str], Path], jobs_dir: Path
) -> Iterator[tuple[FakedServer, dict[Role, str], str]]:
    write_job("true", 'command = ["true"]\n')
    tokens_file = tmp_path / "tokens.toml"
    tokens = {role: create_token(tokens_file, role.name.lower(), role) for role in Role}
    with faked(tmp_path, jobs_dir, tokens_file=tokens_file) as srv:
        admin = {"Authorization": f"Bearer {tokens[Role.ADMIN]}"}
        run_id = srv.post("/v1/runs", json={"job": "true"}, headers=admin).json()["id"]
        wait_for(lambda: srv.launched() == [run_id], what="the run to start")
        srv.finish(run_id)
        wait_for(
            lambda: srv.get(f"/v1/runs/{run_id}", headers=admin).json()["state"] == "succeeded",
            what="the run to end",
        )
        yield srv, tokens, run_id


def test_every_route_refuses_missing_wrong_and_weak_tokens(
    secured: tuple[FakedServer, dict[Role, str], str],
) -> None:
    srv, tokens, run_id = secured
    templates = set(srv.get("/openapi.json").json()["paths"])
    covered = {"/v1/jobs/{name}", "/v1/runs/{run_id}", "/v1/runs/{run_id}/logs",
               "/v1/runs/{run_id}/logs/stream", "/v1/runs/{run_id}/events",
               "/v1/runs/{run_id}/artifacts", "/v1/runs/{run_id}/artifacts/{path}",
               "/v1/runs/{run_id}/cancel", "/v1/batches", "/v1/batches/{batch_id}",
               "/v1/batches/{batch_id}/cancel", "/v1/schedules", "/v1/schedules/{schedule_id}",
               "/v1/status", "/v1/jobs", "/v1/runs", "/v1/me", "/v1/events", "/v1/uploads",
               "/v1/uploads/{upload_id}", "/v1/uploads/{upload_id}/content",
               *OPENAI_ROUTES}  # fmt: skip
    assert templates - PUBLIC - covered == set()  # a new route must join the matrix
    for method, path, needed, body in matrix(run_id):
        resp = srv.request(method, path, json=body)
        assert resp.status_code == 401, (method, path)
        assert resp.headers["www-authenticate"].startswith("Bearer")
        openai_route = path.startswith(("/v1/models", "/v1/chat/"))
        assert resp.headers["content-type"] == (
            "application/json" if openai_route else "application/problem+json"
        )
        wrong = srv.request(method, path, json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401, (method, path)
        for role in Role:
            if role >= needed and path in ENDLESS:
                continue
            headers = {"Authorization": f"Bearer {tokens[role]}"}
            resp = srv.request(method, path, json=body, headers=headers)
            if role < needed:
                assert resp.status_code == 403, (method, path, role)
                assert needed.name.lower() in refusal_detail(resp.content)
            else:
                assert resp.status_code not in (401, 403), (method, path, role)
    for path in ("/health/live", "/health/ready", "/health", "/metrics"):
        assert srv.get(path).status_code == 200


def test_me_names_the_token_and_its_role(
    secured: tuple[FakedServer, dict[Role, str], str],
) -> None:
    srv, tokens, _ = secured
    for role in Role:
        got = srv.get("/v1/me", headers={"Authorization": f"Bearer {tokens[role]}"})
        assert got.json() == {"name": role.name.lower(), "role": role.name.lower(), "auth": True}


@pytest.fixture
def listed(
    tmp_path: Path, write_job: Callable[[str, str], Path], jobs_dir: Path
) -> Iterator[tuple[FakedServer, list[str]]]:
    write_job("a", 'command = ["true"]\n')
    write_job("b", 'command = ["true"]\n')
    with faked(tmp_path, jobs_dir, capacity=1) as srv:
        ids = [srv.submit("a" if i % 3 else "b")["id"] for i in range(11)]
        yield srv, ids


def pages(srv: FakedServer, limit: int, **query: str) -> list[list[str]]:
    out: list[list[str]] = []
    cursor: str | None = None
    while True:
        params = {"limit": limit, **query} | ({"cursor": cursor} if cursor else {})
        body = srv.get("/v1/runs", params=params).json()
        out.append([r["id"] for r in body["runs"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return out


def test_runs_are_listed_newest_first_in_whole_pages(listed: tuple[FakedServer, list[str]]) -> None:
    srv, ids = listed
    got = pages(srv, 4)
    assert [len(p) for p in got] == [4, 4, 3]
    assert [i for p in got for i in p] == sorted(ids, reverse=True)  # none twice, none lost
    assert pages(srv, 11) == [sorted(ids, reverse=True)]


def test_a_filtered_list_pages_within_its_filter(listed: tuple[FakedServer, list[str]]) -> None:
    srv, ids = listed
    only_b = [run_id for i, run_id in enumerate(ids) if i % 3 == 0]
    got = pages(srv, 2, job="b")
    assert [i for p in got for i in p] == sorted(only_b, reverse=True)
    assert all(len(p) == 2 for p in got[:-1])


def test_bad_limits_and_cursors_are_refused(listed: tuple[FakedServer, list[str]]) -> None:
    srv, _ = listed
    for params, field in (({"limit": 0}, "limit"), ({"limit": 501}, "limit"),
                          ({"cursor": "not a cursor"}, "cursor")):  # fmt: skip
        resp = srv.get("/v1/runs", params=params)
        assert resp.status_code in (400, 422), params
        assert resp.headers["content-type"] == "application/problem+json"
        assert field in resp.json()["detail"]
