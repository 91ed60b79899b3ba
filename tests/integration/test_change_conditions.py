"""A condition on a change is kept (RFC 9110 13.1.1): a DELETE, a PATCH, a cancel or a submit
sent with `If-Match: "a tag"` was done whatever the tag (a probe), though runyard's resources
carry none and the condition cannot hold: a 412 now, the change not made. `If-Match: *` and
an If-None-Match naming tags hold; `If-None-Match: *` fails. The whole server in this process
(tests/inprocess.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.inprocess import InProcessServer, serving
from tests.support import EXAMPLE_JOBS, wait_for

FAILS = [{"If-Match": '"nope"'}, {"If-Match": 'W/"a", "b"'}, {"If-None-Match": "*"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    with serving(tmp_path_factory.mktemp("conditions"), EXAMPLE_JOBS) as srv:
        yield srv


def ended_run(server: InProcessServer) -> str:
    run: str = server.post("/v1/runs", json={"job": "true"}).json()["id"]
    wait_for(
        lambda: server.get(f"/v1/runs/{run}").json()["state"] == "succeeded" or None,
        what="the run to end",
    )
    return run


def refused(resp, header: str) -> None:  # type: ignore[no-untyped-def]
    assert resp.status_code == 412, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["field"] == f"header.{header}"


@pytest.mark.parametrize("condition", FAILS, ids=str)
def test_a_delete_whose_condition_fails_deletes_nothing(
    server: InProcessServer, condition: dict[str, str]
) -> None:
    run = ended_run(server)
    refused(server.request("DELETE", f"/v1/runs/{run}", headers=condition), *condition)
    assert server.get(f"/v1/runs/{run}").status_code == 200


@pytest.mark.parametrize("condition", [{"If-Match": "*"}, {"If-None-Match": '"x"'}], ids=str)
def test_a_condition_that_holds_lets_the_change_go_on(
    server: InProcessServer, condition: dict[str, str]
) -> None:
    run = ended_run(server)
    assert server.request("DELETE", f"/v1/runs/{run}", headers=condition).status_code == 204
    assert server.get(f"/v1/runs/{run}").status_code == 404


def test_a_submit_and_a_patch_whose_condition_fails_change_nothing(
    server: InProcessServer,
) -> None:
    before = server.get("/v1/runs", params={"job": "true", "limit": 500}).json()["runs"]
    resp = server.post("/v1/runs", json={"job": "true"}, headers={"If-Match": '"v1"'})
    refused(resp, "If-Match")
    after = server.get("/v1/runs", params={"job": "true", "limit": 500}).json()["runs"]
    assert len(after) == len(before)
    made = server.post("/v1/schedules", json={"job": "true", "interval_s": 3600})
    assert made.status_code == 201, made.text
    url = f"/v1/schedules/{made.json()['id']}"
    patch = {"interval_s": 7200}
    refused(server.request("PATCH", url, json=patch, headers={"If-Match": '"v1"'}), "If-Match")
    assert server.get(url).json()["interval_s"] == 3600


def test_no_route_is_still_a_404_and_a_read_is_not_conditioned(
    server: InProcessServer,
) -> None:
    nowhere = server.request("DELETE", "/v1/nowhere", headers={"If-Match": '"x"'})
    assert nowhere.status_code == 404
    assert server.get("/v1/jobs", headers={"If-Match": '"x"'}).status_code == 200


def test_the_document_says_so_on_each_change(server: InProcessServer) -> None:
    doc = server.get("/openapi.json").json()
    changes = [
        (method, path, op) for path, item in doc["paths"].items() for method, op in item.items()
        if method.upper() in ("POST", "PUT", "PATCH", "DELETE")
    ]  # fmt: skip
    assert len(changes) > 10
    for method, path, op in changes:
        assert "412" in op["responses"], (method, path)
    assert "412" not in doc["paths"]["/v1/jobs"]["get"]["responses"]
