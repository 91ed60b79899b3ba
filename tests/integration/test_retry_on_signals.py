"""`retry_on` against real programs (the whole server in this process, its real supervisor):
a program that dies of a signal named in it is retried; a shell's exit 137 is an exit code, not
SIGKILL; a job file with an item no end can match is a load error in GET /v1/jobs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.inprocess import InProcessServer, serving
from tests.support import wait_for

RETRIED = 'max_attempts = 2\nretry_on = ["SIGKILL", 3]\n[backoff]\nbase_s = 0\njitter = 0\n'
JOBS = {
    # the shell kills itself: it dies of SIGKILL, as an OOM-killed program does
    "killed": f'command = ["sh", "-c", "kill -9 $$"]\n{RETRIED}',
    # a shell telling of its child's death by SIGKILL: an exit code the program gave
    "exits137": f'command = ["sh", "-c", "exit 137"]\n{RETRIED}',
    "broken": 'command = ["true"]\nmax_attempts = 2\nretry_on = [true, 137, "sigsegv"]\n',
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    tmp = tmp_path_factory.mktemp("retry-on")
    jobs = tmp / "jobs"
    jobs.mkdir()
    for name, text in JOBS.items():
        (jobs / f"{name}.toml").write_text(text)
    with serving(tmp, jobs) as srv:
        yield srv


def ended(server: InProcessServer, job: str) -> dict[str, Any]:
    resp = server.post("/v1/runs", json={"job": job})
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["id"]

    def done() -> dict[str, Any] | None:
        run: dict[str, Any] = server.get(f"/v1/runs/{run_id}").json()
        return run if run["state"] in ("succeeded", "failed", "cancelled", "timed_out") else None

    return wait_for(done, what=f"a run of {job} to end")


def test_a_program_killed_by_a_signal_in_retry_on_is_retried(server: InProcessServer) -> None:
    run = ended(server, "killed")
    assert run["state"] == "failed", run
    assert [(a["exit_code"], a["signal"]) for a in run["attempts"]] == [(None, 9), (None, 9)]
    assert run["reason"] == "killed by SIGKILL"


def test_a_shells_exit_137_is_its_exit_code_never_sigkill(server: InProcessServer) -> None:
    run = ended(server, "exits137")
    assert run["state"] == "failed", run
    assert [(a["exit_code"], a["signal"]) for a in run["attempts"]] == [(137, None)]


def test_jobs_list_shows_signal_names_and_the_broken_files_items(server: InProcessServer) -> None:
    listing = server.get("/v1/jobs").json()
    shown = {job["name"]: job["retry_on"] for job in listing["jobs"]}
    assert shown == {"killed": ["SIGKILL", 3], "exits137": ["SIGKILL", 3]}
    error = listing["errors"]["broken.toml"]
    assert error.startswith('retry_on: true (a boolean, not an exit code); "sigsegv" (write '
                            '"SIGSEGV") — allowed: exit codes 1 to 255'), error  # fmt: skip
