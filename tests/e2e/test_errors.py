"""Bad input is answered with problem JSON naming what is wrong, and changes nothing."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"


@pytest.fixture
def server(start_server):
    return start_server()


def post(server, body, **kw) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/runs", json=body, **kw)


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"ticks": 0}, "params.ticks", "greater than or equal to 1"),
        ({"ticks": 1_000_001}, "params.ticks", "less than or equal to 1000000"),
        ({"ticks": "12"}, "params.ticks", "valid integer"),
        ({"seed": 1.5}, "params.seed", "valid integer"),
        ({"bogus": 1}, "params.bogus", "Extra inputs are not permitted"),
    ],
)
def test_invalid_params_are_422_naming_the_field(server, params, field, words) -> None:
    resp = post(server, {"job": "simulate", "params": params})
    assert resp.status_code == 422
    assert resp.headers["content-type"] == PROBLEM
    body = resp.json()
    assert body["status"] == 422
    assert field in body["detail"]
    assert words in body["detail"]
    assert any(e["field"] == field for e in body["errors"])
    assert httpx.get(f"{server.url}/v1/runs").json()["runs"] == []


def test_required_param_missing(server) -> None:
    resp = post(server, {"job": "agent", "params": {}})
    assert resp.status_code == 422
    assert "params.task" in resp.json()["detail"]
    assert "Field required" in resp.json()["detail"]


def test_malformed_body_names_the_field(server) -> None:
    resp = post(server, {"params": {}})
    assert resp.status_code == 422
    assert "body.job" in resp.json()["detail"]
    resp = httpx.post(
        f"{server.url}/v1/runs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert resp.status_code == 422
    assert resp.headers["content-type"] == PROBLEM


def test_unknown_job_is_404_naming_it(server) -> None:
    resp = post(server, {"job": "nope"})
    assert resp.status_code == 404
    assert resp.headers["content-type"] == PROBLEM
    assert "'nope'" in resp.json()["detail"]
    assert httpx.get(f"{server.url}/v1/jobs/nope").status_code == 404


def test_unknown_run_is_404(server) -> None:
    for path in ("", "/logs", "/artifacts", "/artifacts/outputs/x"):
        resp = httpx.get(f"{server.url}/v1/runs/01NOPE{path}")
        assert resp.status_code == 404, path
        assert resp.headers["content-type"] == PROBLEM


def test_jobs_list_publishes_schema_and_load_errors(start_server, write_job, jobs_dir) -> None:
    write_job(
        "good",
        'command = ["echo", "{n}"]\n[params.n]\ntype = "int"\nmin = 1\nmax = 5\ndefault = 2\n',
    )
    write_job("typo", 'comand = ["echo"]\n')
    write_job("undeclared", 'command = ["echo", "{missing}"]\n')
    server = start_server(jobs_dir)
    body = httpx.get(f"{server.url}/v1/jobs").json()
    assert [j["name"] for j in body["jobs"]] == ["good"]
    schema = body["jobs"][0]["params_schema"]
    assert schema["properties"]["n"] == {
        "default": 2,
        "maximum": 5,
        "minimum": 1,
        "type": "integer",
    }
    assert "comand" in body["errors"]["typo.toml"]
    assert "{missing}" in body["errors"]["undeclared.toml"]


def test_job_edits_are_picked_up_without_restart(start_server, write_job, jobs_dir) -> None:
    from tests.support import wait_for

    server = start_server(jobs_dir)
    assert httpx.get(f"{server.url}/v1/jobs/late").status_code == 404
    write_job("late", 'command = ["true"]\n')
    wait_for(lambda: httpx.get(f"{server.url}/v1/jobs/late").status_code == 200, what="new job")


def test_openapi_is_served(server) -> None:
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert "/v1/runs" in spec["paths"]
    assert "/v1/runs/{run_id}/artifacts/{path}" in spec["paths"]
