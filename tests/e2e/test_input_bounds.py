"""Input bounds against a real server, on SQLite and PostgreSQL: json params bounded in depth
and keys, NUL and control characters refused wherever they could reach the store, argv, a
path or a header, schedules bounded; every refusal a 422 naming the field and the limit,
with nothing stored; and the published OpenAPI document saying the same."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import httpx
import pytest

from tests import web

pytestmark = pytest.mark.e2e

JOBS = {
    "probe": (
        'command = ["true", "{s}", "{cfg}"]\n'
        '[params.s]\ntype = "str"\ndefault = ""\n'
        '[params.cfg]\ntype = "json"\ndefault = {}\n'
    ),
    "roomy": (
        'command = ["true", "{cfg}"]\n[params.cfg]\ntype = "json"\nmax_depth = 10\nmax_keys = 400\n'
    ),
    "greedy": 'command = ["true", "{cfg}"]\n[params.cfg]\ntype = "json"\nmax_depth = 100\n',
}


def nest(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.fixture(params=["sqlite", "postgres"])
def server(request, write_job, jobs_dir):
    for name, text in JOBS.items():
        write_job(name, text)
    env = {}
    if request.param == "postgres":  # set up first, so dropped after the server stops
        env["RUNYARD_DATABASE_URL"] = request.getfixturevalue("database")
    return request.getfixturevalue("start_server")(jobs_dir, env=env)


def post(server, path: str, body: dict[str, Any]) -> httpx.Response:
    # json.dumps, not httpx's encoder, so what is sent is exactly what a hostile client sends
    return web.post(
        f"{server.url}{path}", content=json.dumps(body),
        headers={"content-type": "application/json"},
    )  # fmt: skip


def stored(server) -> tuple[int, int, int]:
    runs = web.get(f"{server.url}/v1/runs")
    batches = web.get(f"{server.url}/v1/batches")
    schedules = web.get(f"{server.url}/v1/schedules")
    assert [r.status_code for r in (runs, batches, schedules)] == [200, 200, 200]
    return (
        len(runs.json()["runs"]),
        len(batches.json()["batches"]),
        len(schedules.json()["schedules"]),
    )


def refused(resp: httpx.Response, field: str, *words: str) -> None:
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    detail = resp.json()["detail"]
    assert field in detail, detail
    for word in words:
        assert word in detail, detail


def test_deep_or_wide_json_params_are_refused_naming_the_limit(server) -> None:
    """Defect 1: 260 levels were stored and executed, the submit and then every list 500."""
    for cfg, limit in ((nest(260), "max_depth (5)"), (nest(8), "max_depth (5)"),
                       ({f"k{i}": i for i in range(300)}, "max_keys (200)")):  # fmt: skip
        refused(post(server, "/v1/runs", {"job": "probe", "params": {"cfg": cfg}}),
                "params.cfg", limit)  # fmt: skip
    for cfg in (nest(6), nest(500)):  # the refusal names the value without printing it all
        refused(post(server, "/v1/batches", {"job": "probe", "sweep": {"cfg": [cfg]}}),
                "params.cfg", "max_depth (5)")  # fmt: skip
    refused(post(server, "/v1/schedules", {"job": "probe", "interval_s": 60,
                                           "params": {"cfg": nest(300)}}),
            "params.cfg", "max_depth (5)")  # fmt: skip
    assert stored(server) == (0, 0, 0)  # nothing stored, and every list answers
    ok = post(server, "/v1/runs", {"job": "probe", "params": {"cfg": nest(5)}})
    assert ok.status_code == 202, ok.text
    assert web.get(f"{server.url}/v1/runs/{ok.json()['id']}").json()["params"]["cfg"] == nest(5)


def test_a_job_file_may_raise_json_bounds_within_the_ceiling(server) -> None:
    roomy = post(server, "/v1/runs", {"job": "roomy", "params": {"cfg": nest(8)}})
    assert roomy.status_code == 202, roomy.text
    refused(post(server, "/v1/runs", {"job": "roomy", "params": {"cfg": nest(11)}}),
            "params.cfg", "max_depth (10)")  # fmt: skip
    jobs = web.get(f"{server.url}/v1/jobs").json()
    assert "json_depth_ceiling (32)" in jobs["errors"]["greedy.toml"]  # over the ceiling
    schema = web.get(f"{server.url}/v1/jobs/roomy").json()["params_schema"]
    assert schema["properties"]["cfg"]["x-max-depth"] == 10  # published as it is enforced
    assert schema["properties"]["cfg"]["x-max-keys"] == 400


NUL_BODIES = [
    ("/v1/runs", {"job": "probe", "params": {"s": "a\x00b"}}, "params.s"),
    ("/v1/runs", {"job": "probe", "params": {"s": "bell\x07"}}, "params.s"),
    ("/v1/runs", {"job": "probe", "params": {"cfg": {"k\x00": 1}}}, "params.cfg"),
    ("/v1/runs", {"job": "probe", "params": {"cfg": ["x\x00"]}}, "params.cfg"),
    ("/v1/runs", {"job": "probe", "labels": {"team": "a\x00"}}, "labels"),
    ("/v1/runs", {"job": "probe", "labels": {"te\x00am": "a"}}, "labels"),
    ("/v1/runs", {"job": "pro\x00be"}, "job"),
    ("/v1/batches", {"job": "probe", "sweep": {"s": ["ok", "x\x00"]}}, "params.s"),
    ("/v1/batches", {"job": "probe", "iterations": 2, "labels": {"a": "\x00"}}, "labels"),
    ("/v1/schedules", {"job": "probe", "interval_s": 60, "params": {"s": "\x00"}}, "params.s"),
    ("/v1/schedules", {"job": "probe", "cron": "0 0 * * *", "labels": {"a": "\x1b"}}, "labels"),
]


def test_control_characters_in_bodies_are_refused_naming_the_field(server) -> None:
    """Defect 13: on PostgreSQL 500; on SQLite accepted, then the run failed."""
    for path, body, field in NUL_BODIES:
        refused(post(server, path, body), field)
    assert stored(server) == (0, 0, 0)


def test_control_characters_in_paths_and_queries_are_refused(server) -> None:
    for url, field in (
        ("/v1/runs/x%00y", "path"), ("/v1/runs/x%00y/cancel", "path"),
        ("/v1/runs/x%00y/logs", "path"), ("/v1/batches/x%00y", "path"),
        ("/v1/schedules/x%01y", "path"), ("/v1/jobs/x%00y", "path"),
        ("/v1/runs?job=x%00y", "query.job"), ("/v1/runs?batch=x%00y", "query.batch"),
        ("/v1/runs?cursor=x%00y", "query.cursor"), ("/v1/runs?label=a%3Dx%00", "query.label"),
        ("/v1/batches?cursor=%00", "query.cursor"),
    ):  # fmt: skip
        method = "POST" if url.endswith("/cancel") else "GET"
        refused(web.request(method, f"{server.url}{url}"), field)
    # well-formed text that names nothing is still a plain 404
    assert web.get(f"{server.url}/v1/runs/01NOPE").status_code == 404
    refused(web.get(f"{server.url}/v1/runs/a b"), "run_id")  # not an id at all
    for malformed in ("ZZZ", ".hidden", "a" * 65, "A" * 64):  # an upload id is sha256 hex
        refused(web.get(f"{server.url}/v1/uploads/{malformed}"), "upload_id")
        refused(web.get(f"{server.url}/v1/uploads/{malformed}/content"), "upload_id")
    assert web.get(f"{server.url}/v1/uploads/{'a' * 64}").status_code == 404


def test_free_text_keeps_tabs_and_newlines(server) -> None:
    """The one documented exception: tab, LF and CR are text, and pass into argv intact."""
    resp = post(server, "/v1/runs", {"job": "probe", "params": {"s": "a\tb\nc\r\n"},
                                     "labels": {"note": "ok é ✓"}})  # fmt: skip
    assert resp.status_code == 202, resp.text
    run = web.get(f"{server.url}/v1/runs/{resp.json()['id']}").json()
    assert run["params"]["s"] == "a\tb\nc\r\n"
    assert run["labels"] == {"note": "ok é ✓"}
    listed = web.get(f"{server.url}/v1/runs", params={"label": "note=ok é ✓"}).json()
    assert [r["id"] for r in listed["runs"]] == [run["id"]]


def test_schedules_are_bounded(server) -> None:
    """Defect 12: interval_s 0.001 made thousands of runs; a cron that never fires was a 500."""
    for body, field, words in (
        ({"interval_s": 0.001}, "interval_s", ("minimum interval (1 s",)),
        ({"interval_s": 0.5}, "interval_s", ("minimum interval (1 s",)),
        ({"cron": "0 0 30 2 *"}, "cron", ("never fires",)),
        ({"cron": "0 0 31 4 *"}, "cron", ("never fires",)),
        ({"cron": "* * * * * *"}, "cron", ()),  # six fields: croniter's seconds
        ({"cron": "*/5 * * * *", "interval_s": 60}, "cron", ("exactly one",)),
    ):
        refused(post(server, "/v1/schedules", {"job": "probe", **body}), field, *words)
    assert stored(server) == (0, 0, 0)
    ok = post(server, "/v1/schedules", {"job": "probe", "interval_s": 1, "paused": True})
    assert ok.status_code == 201, ok.text
    patched = web.patch(f"{server.url}/v1/schedules/{ok.json()['id']}", json={"interval_s": 0.01})
    refused(patched, "interval_s", "minimum interval")
    assert web.get(f"{server.url}/v1/schedules/{ok.json()['id']}").json()["interval_s"] == 1


def test_the_openapi_document_is_as_strict_as_the_server(server) -> None:
    """Defect 17 (part): the labels key pattern and value type, exactly one of cron and
    interval_s, the minimum interval — each missing, so schemathesis' positive data failed."""
    doc = web.get(f"{server.url}/openapi.json").json()
    schemas = doc["components"]["schemas"]
    labels = schemas["SubmitRequest"]["properties"]["labels"]
    assert labels["propertyNames"]["pattern"].startswith("^[A-Za-z0-9]")
    assert labels["additionalProperties"]["type"] == "string"
    assert "\\x00" in labels["additionalProperties"]["pattern"]
    assert labels["maxProperties"] == 32
    one_of = schemas["ScheduleRequest"]["oneOf"]
    assert [branch["required"] for branch in one_of] == [["cron"], ["interval_s"]]
    interval = schemas["ScheduleRequest"]["properties"]["interval_s"]["anyOf"][0]
    assert interval["minimum"] == 1.0
    run_id = next(p for p in doc["paths"]["/v1/runs/{run_id}"]["get"]["parameters"]
                  if p["name"] == "run_id")  # fmt: skip
    assert run_id["schema"]["pattern"].startswith("^[A-Za-z0-9]")


def test_a_stored_value_that_cannot_be_shown_never_fails_a_list(start_server, write_job, jobs_dir):
    """Defence in depth for defect 1: a row written before the bounds (or by a bug) is shown
    with that field withheld; the list and the run still answer 200."""
    write_job("probe", JOBS["probe"])
    server = start_server(jobs_dir)
    ok = post(server, "/v1/runs", {"job": "probe", "labels": {"k": "v"}})
    bad = post(server, "/v1/runs", {"job": "probe"})
    with sqlite3.connect(server.data_dir / "runyard.db") as db:
        db.execute("UPDATE runs SET params = ? WHERE id = ?",
                   (json.dumps({"cfg": nest(400)}), bad.json()["id"]))  # fmt: skip
    listed = web.get(f"{server.url}/v1/runs")
    assert listed.status_code == 200
    runs = {r["id"]: r for r in listed.json()["runs"]}
    assert runs[bad.json()["id"]]["withheld"] == ["params"]
    assert runs[bad.json()["id"]]["params"] == {}
    assert runs[ok.json()["id"]]["withheld"] == []
    assert runs[ok.json()["id"]]["labels"] == {"k": "v"}
    one = web.get(f"{server.url}/v1/runs/{bad.json()['id']}")
    assert one.status_code == 200
    assert one.json()["withheld"] == ["params"]
