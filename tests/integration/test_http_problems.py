"""Bad input is answered with problem JSON naming what is wrong, and changes nothing: the whole
server in this process (tests/inprocess.py), no program run. Moved from tests/e2e/test_errors.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import jsonschema_rs
import pytest

from tests.inprocess import InProcessServer, serving
from tests.support import EXAMPLE_JOBS, wait_for

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    """One server for the module: no test here creates anything."""
    with serving(tmp_path_factory.mktemp("problems"), EXAMPLE_JOBS) as srv:
        yield srv


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
def test_invalid_params_are_422_naming_the_field(
    server: InProcessServer, params: dict[str, object], field: str, words: str
) -> None:
    resp = server.post("/v1/runs", json={"job": "simulate", "params": params})
    assert resp.status_code == 422
    assert resp.headers["content-type"] == PROBLEM
    body = resp.json()
    assert body["status"] == 422
    assert field in body["detail"]
    assert words in body["detail"]
    # named where the client sent it, as FastAPI names the request model's fields
    assert any(e["field"] == f"body.{field}" for e in body["errors"])
    assert server.get("/v1/runs").json()["runs"] == []


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/runs", {"job": "simulate", "labels": {"bad key": "x"}}, "body.labels.bad key"),
        ("/v1/batches", {"job": "simulate", "iterations": 1, "labels": {"bad key": "x"}},
         "body.labels.bad key"),
        ("/v1/batches", {"job": "simulate", "sweep": {"bad key": [1]}}, "body.sweep.bad key"),
    ],
)  # fmt: skip
def test_a_refused_key_is_named_where_it_was_sent(
    server: InProcessServer, path: str, body: dict[str, object], field: str
) -> None:
    """A probe: pydantic's own `[key]` came after it (`body.labels.bad key.[key]`)."""
    resp = server.post(path, json=body)
    assert resp.status_code == 422, resp.text
    assert [e["field"] for e in resp.json()["errors"]] == [field]


def test_required_param_missing(server: InProcessServer) -> None:
    resp = server.post("/v1/runs", json={"job": "agent", "params": {}})
    assert resp.status_code == 422
    assert "params.task" in resp.json()["detail"]
    assert "Field required" in resp.json()["detail"]


def test_malformed_body_names_the_field(server: InProcessServer) -> None:
    resp = server.post("/v1/runs", json={"params": {}})
    assert resp.status_code == 422
    assert "body.job" in resp.json()["detail"]
    resp = server.post(
        "/v1/runs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert resp.status_code == 422
    assert resp.headers["content-type"] == PROBLEM


def test_a_problem_lists_at_most_fifty_errors_and_says_how_many_more(
    server: InProcessServer,
) -> None:
    """60,000 unknown params (1 MB) were answered with every error (7 MB): an answer stays
    small whatever the request, the params' own or the request model's."""
    many = {f"p{i}": i for i in range(60_000)}
    for body in ({"job": "simulate", "params": many}, {"job": "simulate", **many}):
        resp = server.post("/v1/runs", json=body)
        assert resp.status_code == 422
        problem = resp.json()
        assert len(problem["errors"]) == 50
        assert problem["errors_omitted"] == 60_000 - 50
        assert len(resp.content) < 10_000
    assert server.get("/v1/runs").json()["runs"] == []


def test_a_header_is_named_alike_whichever_way_the_run_came(server: InProcessServer) -> None:
    """A bad Idempotency-Key or Prefer is `header.<name>` in `errors`, as the request model
    names it, for a JSON body, a multipart one, and several Prefer headers taken together."""
    multipart = (
        b'--B\r\nContent-Disposition: form-data; name="run"\r\n\r\n{"job":"summarize"}\r\n--B--\r\n'
    )
    bodies = [
        ({"content-type": "application/json"}, b'{"job":"true"}'),
        ({"content-type": "multipart/form-data; boundary=B"}, multipart),
    ]
    cases = [
        ([("Idempotency-Key", "")], "header.Idempotency-Key"),
        ([("Idempotency-Key", "k" * 256)], "header.Idempotency-Key"),
        ([("Prefer", "x" * 201)], "header.prefer"),
        ([("Prefer", "x" * 150), ("Prefer", "y" * 150)], "header.prefer"),
        # a wait that is not a number of seconds, not what it begins with
        ([("Prefer", "wait=3abc")], "header.prefer"),
        ([("Prefer", "wait=1e9")], "header.prefer"),
        ([("Prefer", "respond-async, wait=-1")], "header.prefer"),
        ([("Prefer", "handling=lenient"), ("Prefer", 'wait="soon"')], "header.prefer"),
        ([("Prefer", "wait=")], "header.prefer"),
    ]
    for headers, field in cases:
        for kind, body in bodies:
            resp = server.post("/v1/runs", content=body, headers=[*kind.items(), *headers])
            assert resp.status_code == 422, (headers, kind)
            assert [e["field"] for e in resp.json()["errors"]] == [field], (headers, kind)
    assert server.get("/v1/runs").json()["runs"] == []


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"job":"true","params":{"a":' + b"[" * 5000 + b"]" * 5000 + b"}}", "nested"),
        (b'{"job":"simulate","params":{"seed":' + b"9" * 5000 + b"}}", "4300 digits"),
        (b'{"job":"true","labels":{"a":"\xff"}}', "not UTF-8"),
    ],
)
def test_a_body_the_json_reader_gives_up_on_is_400_saying_why(
    server: InProcessServer, body: bytes, words: str
) -> None:
    resp = server.post("/v1/runs", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert resp.json()["type"] == "urn:runyard:problem:unreadable-body"
    assert words in resp.json()["detail"]
    assert server.get("/v1/runs").json()["runs"] == []


@pytest.mark.parametrize("path", ["/v1/runs", "/v1/batches", "/v1/schedules"])
def test_a_json_syntax_error_names_the_body_and_where(server: InProcessServer, path: str) -> None:
    """Not `body.15` (FastAPI's offset where a field's name goes): the body, the character,
    and what the reader expected there."""
    resp = server.post(
        path, content=b'{"job": "true",}', headers={"content-type": "application/json"}
    )
    assert resp.status_code == 422
    why = "not valid JSON at character 15: Expecting property name enclosed in double quotes"
    assert resp.json()["errors"] == [{"field": "body", "message": why}]
    assert server.get("/v1/runs").json()["runs"] == []


def test_unknown_job_is_404_naming_it(server: InProcessServer) -> None:
    resp = server.post("/v1/runs", json={"job": "nope"})
    assert resp.status_code == 404
    assert resp.headers["content-type"] == PROBLEM
    assert "'nope'" in resp.json()["detail"]
    assert server.get("/v1/jobs/nope").status_code == 404


def test_unknown_run_is_404(server: InProcessServer) -> None:
    for path in ("", "/logs", "/artifacts", "/artifacts/outputs/x"):
        resp = server.get(f"/v1/runs/01NOPE{path}")
        assert resp.status_code == 404, path
        assert resp.headers["content-type"] == PROBLEM


def test_a_path_no_route_takes_is_404_saying_what_was_asked(server: InProcessServer) -> None:
    """A bare "Not Found" said nothing of why: an id with an encoded slash is routed as two
    segments, and says so."""
    resp = server.get("/v1/runs/a%2Fb")
    assert resp.status_code == 404
    assert resp.headers["content-type"] == PROBLEM
    assert resp.json()["detail"] == (
        "nothing here: GET /v1/runs/a/b (an encoded '/' is routed as a '/': no id holds one)"
    )
    long = server.request("DELETE", "/v1/nowhere/" + "x" * 400)
    assert long.status_code == 404
    assert long.json()["detail"] == "nothing here: DELETE /v1/nowhere/" + "x" * 187 + "…"


def test_openapi_is_served(server: InProcessServer) -> None:
    spec = server.get("/openapi.json").json()
    assert "/v1/runs" in spec["paths"]
    assert "/v1/runs/{run_id}/artifacts/{path}" in spec["paths"]
    # a batch: exactly one of iterations and sweep, as the server checks (neither, both: 422)
    one_of = spec["components"]["schemas"]["BatchRequest"]["oneOf"]
    assert [branch["required"] for branch in one_of] == [["iterations"], ["sweep"]]
    for body in ({"job": "true"}, {"job": "true", "iterations": 2, "sweep": {"a": [1]}}):
        assert server.post("/v1/batches", json=body).status_code == 422
    # a schedule's change: not both of cron and interval_s, nor both null (a probe found the
    # schema taking what the server refused)
    patch = jsonschema_rs.validator_for(spec["components"]["schemas"]["SchedulePatch"])
    made = server.post("/v1/schedules", json={"job": "true", "interval_s": 3600}).json()["id"]
    for body in ({"cron": "@hourly", "interval_s": 60}, {"cron": None, "interval_s": None}):
        assert not patch.is_valid(body)
        assert server.request("PATCH", f"/v1/schedules/{made}", json=body).status_code == 422
    for body in ({"cron": "@hourly", "interval_s": None}, {"interval_s": 60}, {"paused": True}):
        assert patch.is_valid(body)
        assert server.request("PATCH", f"/v1/schedules/{made}", json=body).status_code == 200, body
    # one timing null, alone: refused on a schedule of either kind (a probe: a 422 on one of
    # its kind, a 200 changing nothing on one of the other), as the schema says
    by_cron = server.post("/v1/schedules", json={"job": "true", "cron": "@daily"}).json()["id"]
    for name in ("cron", "interval_s"):
        assert not patch.is_valid({name: None})
        for schedule in (made, by_cron):
            resp = server.request("PATCH", f"/v1/schedules/{schedule}", json={name: None})
            assert (resp.status_code, resp.json().get("field")) == (422, f"body.{name}"), resp.text


def test_jobs_list_publishes_schema_and_load_errors(
    tmp_path: Path, write_job: Callable[[str, str], Path], jobs_dir: Path
) -> None:
    write_job(
        "good",
        'command = ["echo", "{n}"]\n[params.n]\ntype = "int"\nmin = 1\nmax = 5\ndefault = 2\n',
    )
    write_job("typo", 'comand = ["echo"]\n')
    write_job("undeclared", 'command = ["echo", "{missing}"]\n')
    with serving(tmp_path, jobs_dir) as server:
        body = server.get("/v1/jobs").json()
        # a run of a job whose file is broken says so (a probe: "not declared", no more)
        for refused in (
            server.post("/v1/runs", json={"job": "typo"}),
            server.post("/v1/batches", json={"job": "typo", "iterations": 2}),
            server.post("/v1/schedules", json={"job": "typo", "interval_s": 60}),
            server.get("/v1/jobs/typo"),
        ):
            assert refused.status_code == 404, refused.text
            detail = refused.json()["detail"]
            assert detail.startswith("job 'typo' is not declared: its file typo.toml failed to"), (
                detail
            )
            assert "comand" in detail
        assert server.get("/v1/jobs/nope").json()["detail"] == "job 'nope' is not declared"
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


def test_job_edits_are_picked_up_without_restart(
    tmp_path: Path, write_job: Callable[[str, str], Path], jobs_dir: Path
) -> None:
    with serving(tmp_path, jobs_dir, jobs_refresh_s=0.05) as server:
        assert server.get("/v1/jobs/late").status_code == 404
        write_job("late", 'command = ["true"]\n')
        wait_for(lambda: server.get("/v1/jobs/late").status_code == 200, what="new job")


@pytest.mark.parametrize(
    ("path", "body", "field", "status"),
    [
        ("/v1/batches", {"job": "true", "iterations": "3"}, "iterations", 422),
        ("/v1/batches", {"job": "true", "iterations": 2, "priority": False}, "priority", 422),
        ("/v1/schedules", {"job": "true", "interval_s": "60"}, "interval_s", 422),
        ("/v1/schedules", {"job": "true", "interval_s": 60, "paused": "yes"}, "paused", 422),
        ("/v1/chat/completions",
         {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": "true"},
         "stream", 400),
        # only an assistant's message may be without content (it was taken as empty)
        ("/v1/chat/completions", {"model": "chat", "messages": [{"role": "user", "content": None}]},
         "messages.0.content", 400),
        ("/v1/chat/completions", {"model": "chat", "messages": [
            {"role": "assistant"}, {"role": "system"}, {"role": "user", "content": "hi"}]},
         "messages.1.content", 400),
    ],
)  # fmt: skip
def test_numbers_and_booleans_are_jsons_own(
    server: InProcessServer, path: str, body: dict[str, object], field: str, status: int
) -> None:
    """As the OpenAPI document says: pydantic's lax mode took "3" for 3 and "yes" for true."""
    resp = server.post(path, json=body)
    assert resp.status_code == status, resp.text
    assert field in resp.text


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/runs", "GET, HEAD, POST"),
        ("PATCH", "/v1/runs", "GET, HEAD, POST"),
        ("PUT", "/v1/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV", "DELETE, GET, HEAD"),
        ("POST", f"/v1/uploads/{'0' * 64}", "DELETE, GET, HEAD"),
        ("PUT", "/health/live", "GET, HEAD"),
        ("POST", "/ui/index.html", "GET, HEAD"),  # a mount's static files: Allow was empty
        ("DELETE", "/docs/assets/swagger-ui.css", "GET, HEAD"),
    ],
)
def test_a_method_the_path_has_not_is_405_naming_those_it_has(
    server: InProcessServer, method: str, path: str, allowed: str
) -> None:
    """The Allow header came out empty: the routes of an included router name no methods.
    HEAD is answered wherever GET is (middleware/head_as_get.py), and named with it."""
    resp = server.request(method, path)
    assert resp.status_code == 405
    assert resp.headers["allow"] == allowed


def test_a_refusal_stays_small_whatever_the_job_declares(tmp_path: Path) -> None:
    """A probe: an enum of 20,000 choices, refused, was a 378 KB problem (pydantic lists
    every choice, in `detail` and in `errors`)."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    choices = ", ".join(f'"c{i}"' for i in range(20_000))
    (jobs / "wide.toml").write_text(
        f'command = ["true", "{{e}}"]\n[params.e]\ntype = "enum"\nchoices = [{choices}]\n'
    )
    with serving(tmp_path, jobs) as srv:
        resp = srv.post("/v1/runs", json={"job": "wide", "params": {"e": "zz"}})
        assert resp.status_code == 422
        body = resp.json()
        assert len(resp.content) < 4096
        assert body["errors"][0]["field"] == "body.params.e"
        assert body["errors"][0]["message"].startswith("Input should be 'c0', 'c1'")
        assert body["errors"][0]["message"].endswith("…")
        assert body["detail"].startswith("params.e: Input should be")


def test_a_wait_that_is_no_number_is_shown_as_its_bytes_came(server: InProcessServer) -> None:
    """A probe: `Prefer: wait=٣` (UTF-8) came back as `got 'Ù£'`, the header read as Latin-1."""
    resp = server.post("/v1/runs", json={"job": "true"},
                       headers={"Prefer": "wait=٣".encode()})  # fmt: skip
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"].endswith(r"got '\xd9\xa3'"), resp.json()
