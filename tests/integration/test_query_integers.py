"""Every integer query param is read strictly, as header integers are: ASCII digits only, at
most 19 of them. pydantic's lax int took `1_0` for 10, and `+1`, ` 5`, `5.0` too (found on
`GET /v1/runs/{id}/logs?offset=1_0`). The whole server in this process (tests/inprocess.py);
the WebSocket's `after` is tests/e2e/test_streams.py's, on a real server."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.inprocess import InProcessServer, serving
from tests.support import EXAMPLE_JOBS, wait_for

PROBLEM = "application/problem+json"
REFUSAL = (
    "Input should be an integer of 1 to 19 ASCII digits, without sign, space, underscore or point"
)

# (path, param, a valid value): every integer query param the server publishes; {run} is an
# ended run's id, so each stream answers what it has and ends
PARAMS = [
    ("/v1/runs", "limit", "1"),
    ("/v1/runs/{run}/logs", "offset", "0"),
    ("/v1/runs/{run}/logs", "limit", "1"),
    ("/v1/runs/{run}/logs", "attempt", "1"),
    ("/v1/runs/{run}/logs/stream", "offset", "0"),
    ("/v1/runs/{run}/logs/stream", "attempt", "1"),
    ("/v1/runs/{run}/events", "after", "0"),
    ("/v1/runs/{run}/artifacts", "limit", "1"),
    ("/v1/batches", "limit", "1"),
    ("/v1/schedules", "limit", "1"),
]
HOSTILE = [
    "1_0",  # Python's digit separator: was 10
    "+1",
    "-0",
    " 5",
    "5 ",
    "1.0",
    "1e3",
    "0x10",
    "\u0665",  # ARABIC-INDIC DIGIT FIVE
    "\uff15",  # FULLWIDTH DIGIT FIVE
    "\u00b2",  # SUPERSCRIPT TWO: str.isdigit() says yes
    "",
    "1" * 20,  # past 19 digits, whatever the bound
    "0" * 19 + "1",  # zeros in front count
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    with serving(tmp_path_factory.mktemp("query-ints"), EXAMPLE_JOBS) as srv:
        yield srv


@pytest.fixture(scope="module")
def run_id(server: InProcessServer) -> str:
    run: str = server.post("/v1/runs", json={"job": "true"}).json()["id"]
    wait_for(
        lambda: server.get(f"/v1/runs/{run}").json()["state"] == "succeeded" or None,
        what="the run to end",
    )
    return run


def _url(path: str, run: str, param: str, value: str) -> str:
    return f"{path.format(run=run)}?{param}={quote(value, safe='')}"


@pytest.mark.parametrize("value", HOSTILE, ids=ascii)
@pytest.mark.parametrize(("path", "param", "valid"), PARAMS)
def test_an_integer_query_param_takes_ascii_digits_only(
    server: InProcessServer, run_id: str, path: str, param: str, valid: str, value: str
) -> None:
    resp = server.get(_url(path, run_id, param, value))
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"] == PROBLEM
    body = resp.json()
    assert body["status"] == 422
    assert body["errors"] == [{"field": f"query.{param}", "message": REFUSAL}]
    assert body["detail"] == f"query.{param}: {REFUSAL}"


@pytest.mark.parametrize(("path", "param", "valid"), PARAMS)
def test_an_integer_query_param_in_plain_digits_is_taken_as_before(
    server: InProcessServer, run_id: str, path: str, param: str, valid: str
) -> None:
    for value in (valid, "0" + valid):  # zeros in front, as ever
        resp = server.get(_url(path, run_id, param, value))
        assert resp.status_code == 200, (value, resp.text)


def test_the_bounds_are_each_params_own(server: InProcessServer, run_id: str) -> None:
    """The digits check comes first; then the param's bounds, worded as before."""
    cases = [
        ("/v1/runs?limit=0", "query.limit", "greater than or equal to 1"),
        ("/v1/runs?limit=501", "query.limit", "less than or equal to 500"),
        (f"/v1/runs/{run_id}/logs?offset=9223372036854775808", "query.offset",
         "less than or equal to 9223372036854775807"),
        (f"/v1/runs/{run_id}/events?after=1000000000000000000", "query.after",
         "less than or equal to 999999999999999999"),
    ]  # fmt: skip
    for url, field, words in cases:
        resp = server.get(url)
        assert resp.status_code == 422, url
        assert resp.json()["errors"] == [{"field": field, "message": f"Input should be {words}"}]
    page = server.get("/v1/runs?limit=0000000000000000001")  # 19 characters: taken
    assert page.status_code == 200
    assert len(page.json()["runs"]) == 1


def test_the_table_is_every_integer_query_param_and_the_schema_keeps_its_bounds(
    server: InProcessServer,
) -> None:
    """A new integer query param must be added above (and be read by int_query); each is
    published as an integer with a minimum and a maximum, as the server holds it to."""
    doc = server.get("/openapi.json").json()
    found = set()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for param in op.get("parameters", []):
                schema = param["schema"]
                branches = [b for b in schema.get("anyOf", [schema]) if b != {"type": "null"}]
                if param["in"] != "query" or branches[0].get("type") != "integer":
                    continue
                found.add((path.replace("{run_id}", "{run}"), param["name"]))
                assert "minimum" in branches[0], (method, path, param)
                assert "maximum" in branches[0], (method, path, param)
                assert not {"ge", "le"} & set(branches[0]), (method, path, param)
    assert found == {(path, param) for path, param, _ in PARAMS}
