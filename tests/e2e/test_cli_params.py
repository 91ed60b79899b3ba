"""`-p NAME=VALUE` as a user means it (a probe of the CLI): a value that reads as JSON
(`123`, `true`, `null`, `1.0`) given to a text param was sent as JSON and refused, 422 "Input
should be a valid string", with no hint that quoting it would do; it is the text now, for a
text param only. A param given twice was sent as the last one, silently; it is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import web

pytestmark = pytest.mark.e2e

TEXT = 'command = ["echo", "{text}", "{count}"]\n[params.text]\ntype = "str"\n' \
    '[params.count]\ntype = "int"\ndefault = 0\n'  # fmt: skip


def cli(server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runyard", *args, "--server", server.url],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def server(start_server, write_job, jobs_dir: Path):
    write_job("text", TEXT)
    return start_server(jobs_dir)


@pytest.mark.parametrize("value", ["123", "true", "null", "1.0", "[1, 2]", '"quoted"'])
def test_a_value_that_reads_as_json_is_a_text_params_text(server, value: str) -> None:
    done = cli(server, "run", "text", "-p", f"text={value}", "-p", "count=7")
    assert done.returncode == 0, done.stderr
    expected = "quoted" if value == '"quoted"' else value  # a JSON string is its text, as ever
    assert done.stdout.strip() == f"{expected} 7", done.stdout


def test_a_number_param_still_takes_a_number_and_refuses_text(server) -> None:
    done = cli(server, "run", "text", "-p", "text=x", "-p", "count=seven")
    assert done.returncode != 0 and "count" in done.stderr, done.stderr
    runs = web.get(f"{server.url}/v1/runs", params={"job": "text"}).json()["runs"]
    assert runs == []


def test_a_param_given_twice_is_refused(server) -> None:
    for command in (["run", "text"], ["submit", "text"], ["batch", "text", "--iterations", "2"]):
        done = cli(server, *command, "-p", "text=a", "-p", "text=b")
        assert done.returncode != 0 and "given twice" in done.stderr, (command, done.stderr)
    assert web.get(f"{server.url}/v1/runs", params={"job": "text"}).json()["runs"] == []
    done = cli(server, "batch", "text", "-p", "text=a", "--sweep", 'text=["b", "c"]')
    assert done.returncode != 0 and "-p and with --sweep" in done.stderr, done.stderr


def test_a_sweep_of_a_text_param_takes_its_values_as_written(server) -> None:
    done = cli(server, "batch", "text", "--sweep", 'text=[1, 1e3, true, null, "x"]')
    assert done.returncode == 0, done.stderr
    done = cli(server, "batch", "text", "-p", "text=n", "--sweep", "count=[1, 2]")
    assert done.returncode == 0, done.stderr
    runs = web.get(f"{server.url}/v1/runs", params={"job": "text"}).json()["runs"]
    texts = sorted(r["params"]["text"] for r in runs if r["params"]["text"] != "n")
    assert texts == ["1", "1e3", "null", "true", "x"], texts
    counts = sorted(r["params"]["count"] for r in runs if r["params"]["text"] == "n")
    assert counts == [1, 2]  # a number param's sweep stays numbers
