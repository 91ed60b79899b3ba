"""Whatever is accepted can be read back, on both stores (property-based, hypothesis).

Generated submissions, batches and schedules — hostile values included: NUL and other
control characters, lone surrogates, NaN and Infinity, huge integers, deep and wide json,
any Unicode — are each either refused with a 4xx and nothing stored, or accepted and then
readable: GET of it and of every list answers 200 with the same values. The server runs in
this process (tests/inprocess.py) with its real store and supervisor."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.inprocess import InProcessServer, serving

# The server runs on another thread while Hypothesis draws, and PostgreSQL's connection pool
# jitters its connections' lifetimes with the global `random`: Hypothesis sees that state
# move and blames the strategies (which use no `random`), failing the test as flaky.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)

JOB = """
command = ["true", "{s}", "{n}", "{x}", "{b}", "{e}", "{cfg}"]
[params.s]
type = "str"
default = ""
[params.n]
type = "int"
default = 0
[params.x]
type = "float"
default = 0.0
[params.b]
type = "bool"
default = false
[params.e]
type = "enum"
choices = ["a", "b"]
default = "a"
[params.cfg]
type = "json"
default = {}
"""


def _nest_of(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


HOSTILE_CHARS = ["\x00", "\x01", "\x1b", "\x7f", "\x85", "\t", "\n", "\r", "\ud800", "\udfff"]
chars = st.one_of(st.characters(), st.sampled_from(HOSTILE_CHARS))
text = st.text(chars, max_size=12)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=40,
)
deep = st.integers(min_value=1, max_value=300).map(_nest_of)
wide = st.integers(min_value=150, max_value=260).map(lambda n: {f"k{i}": i for i in range(n)})
param_values = {
    "s": text,
    "n": st.one_of(st.integers(), numbers, text),
    "x": numbers,
    "b": st.one_of(st.booleans(), numbers),
    "e": st.one_of(st.sampled_from(["a", "b"]), text),
    "cfg": st.one_of(json_values, deep, wide),
}
params = st.fixed_dictionaries({}, optional=param_values)
labels = st.dictionaries(
    st.one_of(st.from_regex(r"\A[a-z][a-z0-9_.-]{0,8}\Z"), text), text, max_size=3
)
JSON = {"content-type": "application/json"}
PROPERTY = settings(
    max_examples=int(os.environ.get("RUNYARD_PROPERTY_EXAMPLES", "40")),
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _wire(body: dict[str, Any]) -> bytes:
    # json.dumps (not httpx) so NaN, Infinity and lone surrogates reach the server as sent
    return json.dumps(body).encode()


def same(a: Any, b: Any) -> bool:
    """Equal as JSON values: numbers by value (PostgreSQL's jsonb may write 1e300 as digits)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        if isinstance(a, int) and isinstance(b, int):
            return a == b
        return math.isclose(float(a), float(b), rel_tol=1e-15, abs_tol=0.0)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.fixture(params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[InProcessServer]:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "probe.toml").write_text(JOB)
    url = request.getfixturevalue("database") if request.param == "postgres" else None
    with serving(tmp_path, jobs, url) as srv:
        yield srv


def counts(srv: InProcessServer) -> tuple[int, int, int]:
    runs = srv.get("/v1/runs", params={"limit": 500})
    batches = srv.get("/v1/batches", params={"limit": 200})
    schedules = srv.get("/v1/schedules", params={"limit": 500})
    assert (runs.status_code, batches.status_code, schedules.status_code) == (200, 200, 200)
    return (
        len(runs.json()["runs"]),
        len(batches.json()["batches"]),
        len(schedules.json()["schedules"]),
    )


def refused_and_unchanged(srv: InProcessServer, resp: Any, before: tuple[int, int, int]) -> None:
    assert 400 <= resp.status_code < 500, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert counts(srv) == before  # a refused request changes nothing


def readable_run(srv: InProcessServer, run: dict[str, Any], sent: dict[str, Any]) -> None:
    got = srv.get(f"/v1/runs/{run['id']}")
    assert got.status_code == 200, got.text
    for key, value in sent.get("params", {}).items():
        stored, expected = got.json()["params"][key], value
        if key == "x":  # a float param holds a double: an int sent is that double
            stored, expected = float(stored), float(value)
        assert same(stored, expected), (key, stored, expected)
    assert got.json()["labels"] == sent.get("labels", {})
    listed = {r["id"]: r for r in srv.get("/v1/runs", params={"limit": 500}).json()["runs"]}
    assert same(listed[run["id"]]["params"], got.json()["params"])
    by_job = srv.get("/v1/runs", params={"job": "probe", "limit": 500})
    assert by_job.status_code == 200
    for key, value in sent.get("labels", {}).items():
        by_label = srv.get("/v1/runs", params={"label": f"{key}={value}", "limit": 500})
        assert by_label.status_code == 200
        assert run["id"] in {r["id"] for r in by_label.json()["runs"]}


@PROPERTY
@given(body=st.fixed_dictionaries({"job": st.just("probe"), "params": params, "labels": labels}))
def test_a_submission_is_refused_or_readable(server: InProcessServer, body: dict) -> None:
    before = counts(server)
    resp = server.post("/v1/runs", content=_wire(body), headers=JSON)
    event(f"answered {resp.status_code}")
    if resp.status_code != 202:
        refused_and_unchanged(server, resp, before)
        return
    readable_run(server, resp.json(), body)


@PROPERTY
@given(
    shared=params,
    swept=st.sampled_from(sorted(param_values)).flatmap(
        lambda name: st.tuples(st.just(name), st.lists(param_values[name], min_size=1, max_size=3))
    ),
    lab=labels,
)
def test_a_batch_is_refused_or_readable(
    server: InProcessServer, shared: dict, swept: tuple[str, list], lab: dict
) -> None:
    name, values = swept
    body = {"job": "probe", "params": shared, "sweep": {name: values}, "labels": lab}
    before = counts(server)
    resp = server.post("/v1/batches", content=_wire(body), headers=JSON)
    event(f"answered {resp.status_code}")
    if resp.status_code != 202:
        refused_and_unchanged(server, resp, before)
        return
    batch = resp.json()
    assert server.get(f"/v1/batches/{batch['id']}").status_code == 200
    runs = server.get("/v1/runs", params={"batch": batch["id"], "limit": 500})
    assert runs.status_code == 200
    assert len(runs.json()["runs"]) == batch["size"] == len(values)
    for run in runs.json()["runs"]:
        readable_run(server, run, {"params": {}, "labels": lab})
    assert sorted(json.dumps(r["params"][name]) for r in runs.json()["runs"]) == sorted(
        json.dumps(server.get(f"/v1/runs/{r['id']}").json()["params"][name])
        for r in runs.json()["runs"]
    )


timing = st.one_of(
    st.fixed_dictionaries({"interval_s": st.one_of(numbers, st.sampled_from([0.001, 1, 60]))}),
    st.fixed_dictionaries({
        "cron": st.one_of(
            st.sampled_from(["*/5 * * * *", "0 0 30 2 *", "* * * * * *", "@hourly", "0 0 31 4 *"]),
            text,
        )
    }),
)  # fmt: skip


@PROPERTY
@given(timing=timing, p=params, lab=labels)
def test_a_schedule_is_refused_or_readable(
    server: InProcessServer, timing: dict, p: dict, lab: dict
) -> None:
    body = {"job": "probe", "params": p, "labels": lab, "paused": True, **timing}
    before = counts(server)
    resp = server.post("/v1/schedules", content=_wire(body), headers=JSON)
    event(f"answered {resp.status_code}")
    if resp.status_code != 201:
        refused_and_unchanged(server, resp, before)
        return
    got = server.get(f"/v1/schedules/{resp.json()['id']}")
    assert got.status_code == 200
    assert same(got.json()["params"], p)
    assert got.json()["labels"] == lab
    assert got.json()["next_fire_at"] is None  # paused, it fires nothing
    # what is accepted fires: resumed, it has a time to; paused again before it does
    sid = resp.json()["id"]
    resumed = server.request("PATCH", f"/v1/schedules/{sid}", json={"paused": False})
    assert resumed.status_code == 200 and resumed.json()["next_fire_at"] is not None
    assert server.request("PATCH", f"/v1/schedules/{sid}", json={"paused": True}).is_success
    listed = {s["id"]: s for s in server.get("/v1/schedules").json()["schedules"]}
    assert same(listed[resp.json()["id"]]["params"], p)
