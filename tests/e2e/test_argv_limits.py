"""A submission whose params would make the command too long to exec is refused
(jobs/argv_bounds.py): an argument over Linux's MAX_ARG_STRLEN, or arguments and environment
over ARG_MAX, was accepted and failed as it started (126, "Argument list too long"). A real
server and real programs: what is accepted runs, what is refused is a 422 naming the params
and the limit, with nothing stored."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from runyard.jobs.spec import load_job
from tests import web

pytestmark = pytest.mark.e2e

ONE = 'command = ["printf", "%s", "{text}"]\n[params.text]\ntype = "str"\nmax_length = 500000\n'
# twenty arguments, each within MAX_ARG_STRLEN, together past ARG_MAX (2 MiB)
MANY = (
    'command = ["true", ' + ", ".join(f'"{{p{i}}}"' for i in range(20)) + "]\n"
    + "".join(
        f'[params.p{i}]\ntype = "str"\nmax_length = 120000\ndefault = ""\n' for i in range(20)
    )
)  # fmt: skip


@pytest.fixture
def server(write_job, jobs_dir, start_server):
    write_job("one", ONE)
    write_job("many", MANY)
    write_job("small", 'command = ["printf", "%s", "{text}"]\n[params.text]\ntype = "str"\n')
    return start_server(jobs_dir, env={"RUNYARD_MAX_BODY_KB": "8192"})


def runs_stored(server) -> int:
    with sqlite3.connect(server.data_dir / "runyard.db") as db:
        return int(db.execute("SELECT count(*) FROM runs").fetchone()[0])


def test_an_argument_past_max_arg_strlen_is_refused_and_one_within_runs(server) -> None:
    refused = web.post(
        f"{server.url}/v1/runs", json={"job": "one", "params": {"text": "x" * 140_000}}
    )
    assert refused.status_code == 422
    problem = refused.json()
    assert "params.text" in problem["detail"] and "MAX_ARG_STRLEN" in problem["detail"]
    assert "140000 bytes" in problem["detail"]
    multibyte = web.post(
        f"{server.url}/v1/runs", json={"job": "one", "params": {"text": "é" * 70_000}}
    )
    assert multibyte.status_code == 422  # 70,000 characters, 140,000 bytes in UTF-8
    assert runs_stored(server) == 0
    accepted = web.post(
        f"{server.url}/v1/runs", json={"job": "one", "params": {"text": "x" * 130_000}}
    )
    assert accepted.status_code == 202
    with server.client() as client:
        run = server.wait_run(client, accepted.json()["id"])
    assert run.state == "succeeded"  # exec took it: printf wrote it whole
    assert len(web.get(f"{server.url}/v1/runs/{run.id}/logs").content) == 130_000


def test_arguments_together_past_arg_max_are_refused_naming_the_params(server) -> None:
    big = {f"p{i}": "y" * 110_000 for i in range(20)}  # 2.2 MB, each argument within its cap
    refused = web.post(f"{server.url}/v1/runs", json={"job": "many", "params": big})
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert "ARG_MAX" in detail and "params.p0" in detail
    batch = web.post(f"{server.url}/v1/batches", json={"job": "many", "params": [{}, big]})
    assert batch.status_code == 422  # a batch with one such run is refused whole
    assert runs_stored(server) == 0
    fits = {f"p{i}": "y" * 50_000 for i in range(20)}  # 1 MB
    accepted = web.post(f"{server.url}/v1/runs", json={"job": "many", "params": fits})
    assert accepted.status_code == 202
    with server.client() as client:
        assert server.wait_run(client, accepted.json()["id"]).state == "succeeded"


def test_only_a_job_that_could_pass_a_limit_measures_its_command(jobs_dir: Path) -> None:
    for name, text in (("one", ONE), ("many", MANY), ("small", 'command = ["true", "{t}"]\n'
                        '[params.t]\ntype = "str"\n')):  # fmt: skip
        (jobs_dir / f"{name}.toml").write_text(text)
    assert load_job(jobs_dir / "one.toml").argv_bound
    assert load_job(jobs_dir / "many.toml").argv_bound
    assert not load_job(jobs_dir / "small.toml").argv_bound  # 4096 characters at most
