"""A batch is bounded as a whole, like the runs it makes: admitted against `max_queue`, no more
params stored than `max_batch_mb`, and every value it stores checked, a base value its sweep
replaces included. What is refused creates nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.inprocess import FakedServer, faked

JOBS = {
    "limited": 'command = ["true"]\nmax_queue = 3\n',
    "grid": 'command = ["true"]\n[params.a]\ntype = "int"\n[params.b]\ntype = "int"\nmax = 100\n',
    "text": 'command = ["true"]\n[params.s]\ntype = "str"\nmax_length = 100000\n'
    '[params.n]\ntype = "int"\ndefault = 0\n',
    # a probe: a request naming no param stored this default in every run, uncounted
    "big_default": 'command = ["true"]\n[params.s]\ntype = "str"\nmax_length = 100000\n'
    f'default = "{"y" * 20_000}"\n',
}


@pytest.fixture
def jobs(write_job: Callable[[str, str], Path], jobs_dir: Path) -> Path:
    for name, text in JOBS.items():
        write_job(name, text)
    return jobs_dir


@pytest.fixture
def server(tmp_path: Path, jobs: Path) -> Iterator[FakedServer]:
    # no slot: everything submitted stays queued
    with faked(tmp_path, jobs, capacity=1, max_batch_mb=1) as srv:
        srv.post("/v1/runs", json={"job": "grid", "params": {"a": 0, "b": 0}})  # the slot
        yield srv


def stored(srv: FakedServer, job: str) -> int:
    return len([r for r in srv.get("/v1/runs?limit=200").json()["runs"] if r["job"] == job])


def test_a_batch_is_admitted_against_max_queue_as_a_whole(server: FakedServer) -> None:
    assert server.post("/v1/runs", json={"job": "limited"}).status_code == 202
    over = server.post("/v1/batches", json={"job": "limited", "iterations": 3})
    assert over.status_code == 429
    assert "3 more would pass its max_queue (3)" in over.json()["detail"]
    assert "retry-after" in over.headers
    assert stored(server, "limited") == 1
    assert server.post("/v1/batches", json={"job": "limited", "iterations": 2}).status_code == 202
    assert server.post("/v1/runs", json={"job": "limited"}).status_code == 429
    assert stored(server, "limited") == 3
    # more than the queue can ever hold: refused for good, no Retry-After to follow
    never = server.post("/v1/batches", json={"job": "limited", "iterations": 4})
    assert never.status_code == 422 and "retry-after" not in never.headers


def test_a_batch_stores_no_more_params_than_max_batch_mb(server: FakedServer) -> None:
    text = "x" * 20_000  # 100 runs of it: about 2 MB, over 1 MiB
    over = server.post(
        "/v1/batches", json={"job": "text", "params": {"s": text}, "iterations": 100}
    )
    assert over.status_code == 422
    assert "max_batch_mb (1 MiB)" in over.json()["detail"]
    assert over.json()["limit"] == 2**20
    sweep = {"job": "text", "params": {"s": text}, "sweep": {"n": list(range(100))}}
    swept = server.post("/v1/batches", json=sweep)
    assert swept.status_code == 422
    assert stored(server, "text") == 0
    ok = server.post("/v1/batches", json={"job": "text", "params": {"s": text}, "iterations": 10})
    assert ok.status_code == 202
    runs = [r for r in server.get("/v1/runs?limit=200").json()["runs"] if r["job"] == "text"]
    assert [r["params"] for r in runs] == [{"s": text, "n": 0}] * 10


def test_what_a_run_stores_is_counted_its_defaults_and_labels_included(
    server: FakedServer,
) -> None:
    """A probe: the bound counted the request's params only. A batch naming no param stored
    the job's 30,000-character default in each of 2,500 runs (155 MB from a 40-byte body),
    and 10,000 runs with 10 KB of labels each grew the database by 123 MB."""
    defaulted = server.post("/v1/batches", json={"job": "big_default", "iterations": 100})
    assert defaulted.status_code == 422
    assert "max_batch_mb (1 MiB)" in defaulted.json()["detail"]
    labels = {f"k{i:02d}": "v" * 256 for i in range(32)}  # 8.5 KB a run, 130 runs: 1.1 MB
    labelled = {"job": "grid", "params": {"a": 1, "b": 1}, "iterations": 130, "labels": labels}
    refused = server.post("/v1/batches", json=labelled)
    assert refused.status_code == 422
    assert "params and labels" in refused.json()["detail"]
    assert stored(server, "big_default") == 0
    assert stored(server, "grid") == 1  # the slot holder only
    fits = server.post("/v1/batches", json={"job": "big_default", "iterations": 10})
    assert fits.status_code == 202


def test_a_base_value_the_sweep_replaces_is_checked_too(server: FakedServer) -> None:
    bad = {"job": "grid", "params": {"a": 1, "b": 999}, "sweep": {"b": [1, 2]}}
    refused = server.post("/v1/batches", json=bad)
    assert refused.status_code == 422
    assert "a value the sweep replaces" in refused.json()["detail"]
    assert "b" in refused.json()["detail"]
    assert stored(server, "grid") == 1  # the slot holder only
    ok = {"job": "grid", "params": {"a": 1, "b": 5}, "sweep": {"b": [1, 2]}}
    assert server.post("/v1/batches", json=ok).status_code == 202
    runs = [r["params"] for r in server.get("/v1/runs?limit=200").json()["runs"]]
    assert {"a": 1, "b": 1} in runs and {"a": 1, "b": 2} in runs


def test_iterations_checked_once_still_refuse_a_bad_value(server: FakedServer) -> None:
    resp = server.post("/v1/batches", json={"job": "grid", "params": {"a": 1, "b": 999},
                                            "iterations": 3})  # fmt: skip
    assert resp.status_code == 422
    assert "params.b" in resp.json()["detail"]
    assert stored(server, "grid") == 1


def test_a_bad_swept_value_is_named_as_its_element_even_beside_a_replaced_one(
    server: FakedServer,
) -> None:
    body = {"job": "grid", "params": {"a": 5}, "sweep": {"a": [1, 2], "b": [999, 1]}}
    resp = server.post("/v1/batches", json=body)
    assert resp.status_code == 422
    assert resp.json()["detail"].startswith("batch element 0 ")
    assert resp.json()["element"] == 0
    assert stored(server, "grid") == 1


def test_a_sweep_of_nothing_is_refused_not_one_run(server: FakedServer) -> None:
    resp = server.post("/v1/batches", json={"job": "grid", "params": {"a": 1}, "sweep": {}})
    assert resp.status_code == 422
    assert [e["field"] for e in resp.json()["errors"]] == ["body.sweep"]
    assert stored(server, "grid") == 1  # the slot holder only
