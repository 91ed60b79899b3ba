"""A job file is hostile input: whatever one file is (a FIFO, a link to a device or to nothing,
a huge or sparse file) or holds (nesting that exhausts the parser's stack), it is that file's
load error, in GET /v1/jobs, /v1/status and the log. The server starts with it there, the
other jobs run, and no file costs more memory or time than its cap allows."""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path
from typing import Any

import pytest

from runyard.models import RunState
from tests import web
from tests.support import wait_for

pytestmark = pytest.mark.e2e

TRUE = 'command = ["true"]\n'
# the server with its address space capped, as the probe ran it: a file read whole runs it
# out of memory (MemoryError, a 500 for every job lookup) instead of running the machine out
CAPPED_AS = 3 * 2**30
CAPPED_ENTRY = [
    "-c",
    "import resource, runpy, sys\n"
    f"resource.setrlimit(resource.RLIMIT_AS, ({CAPPED_AS}, {CAPPED_AS}))\n"
    "sys.argv[0] = 'runyard'\n"
    "runpy.run_module('runyard', run_name='__main__')\n",
]


def jobs_of(server) -> dict[str, Any]:
    resp = web.get(f"{server.url}/v1/jobs", timeout=30)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def load_errors(server) -> dict[str, str]:
    errors: dict[str, str] = jobs_of(server)["errors"]
    return errors


def status_errors(server) -> dict[str, str]:
    resp = web.get(f"{server.url}/v1/status", timeout=30)
    assert resp.status_code == 200, resp.text
    errors: dict[str, str] = resp.json()["jobs"]["load_errors"]
    return errors


def logged_errors(server) -> dict[str, str]:
    """file -> error, from the server's job_load_error log lines."""
    found = {}
    for line in Path(server.log_path).read_text().splitlines():
        if line.startswith("{") and (event := json.loads(line)).get("event") == "job_load_error":
            found[event["file"]] = event["error"]
    return found


def reported(server, name: str, words: str) -> None:
    """`name`'s load error says `words` in /v1/jobs, /v1/status and the log."""
    wait_for(lambda: words in load_errors(server).get(name, ""), what=f"{name}'s load error")
    assert words in status_errors(server)[name]
    assert words in wait_for(lambda: logged_errors(server).get(name), what=f"{name} logged")


def runs_true(server) -> None:
    """Another job is listed, submitted and run as if nothing were wrong."""
    assert "true" in [job["name"] for job in jobs_of(server)["jobs"]]
    with server.client() as c:
        run = c.submit("true")
        assert server.wait_run(c, run.id).state is RunState.SUCCEEDED


def test_a_deeply_nested_job_file_is_a_load_error_and_the_server_starts(
    start_server, write_job, jobs_dir
) -> None:
    """A 2 KB file of nested arrays raised RecursionError out of the scan: every job lookup
    and submit answered 500, readiness said ok, and a server would not start with it there."""
    write_job("true", TRUE)
    write_job("deep", TRUE + "x = " + "[" * 1000 + "]" * 1000 + "\n")
    server = start_server(jobs_dir)
    reported(server, "deep.toml", "nested deeper than 64 levels")
    runs_true(server)
    # and one added while it serves: an inline table nested as deep
    write_job("inline", TRUE + "x = " + "{a=" * 1000 + "1" + "}" * 1000 + "\n")
    reported(server, "inline.toml", "nested deeper than 64 levels")
    runs_true(server)


def test_a_fifo_job_file_is_a_load_error_and_never_blocks_lookups(
    start_server, write_job, jobs_dir
):
    """A FIFO named *.toml blocked the scan in open() for good, holding the registry's lock:
    every job lookup hung (even after the FIFO was removed), and a server started with one
    never became live."""
    write_job("true", TRUE)
    os.mkfifo(jobs_dir / "pipe.toml")
    server = start_server(jobs_dir)
    reported(server, "pipe.toml", "not a regular file (a FIFO)")
    runs_true(server)
    os.mkfifo(jobs_dir / "later.toml")  # one that appears while it serves
    reported(server, "later.toml", "not a regular file (a FIFO)")
    runs_true(server)


@pytest.mark.skipif(resource.getrlimit(resource.RLIMIT_AS)[1] != resource.RLIM_INFINITY and
                    resource.getrlimit(resource.RLIMIT_AS)[1] < CAPPED_AS,
                    reason="the address space is capped lower already")  # fmt: skip
def test_a_job_file_that_is_a_device_or_huge_is_refused_without_reading_it(
    start_server, write_job, jobs_dir
) -> None:
    """A link to /dev/zero, or a sparse file of 4 GiB, was read whole before its size was
    checked: a server out of memory (MemoryError, a 500 for every job lookup and submit)."""
    write_job("true", TRUE)
    (jobs_dir / "zero.toml").symlink_to("/dev/zero")
    with (jobs_dir / "sparse.toml").open("wb") as f:
        f.truncate(4 * 2**30)  # more than the server's whole address space
    server = start_server(jobs_dir, entry=CAPPED_ENTRY)
    reported(server, "zero.toml", "not a regular file (a character device)")
    reported(server, "sparse.toml", "file is over 262144 bytes")
    runs_true(server)


def test_a_dangling_or_looping_link_is_a_load_error(start_server, write_job, jobs_dir, tmp_path):
    """A job file linked into place (as a ConfigMap is) whose target went, or a loop of links,
    vanished from /v1/jobs without any error: its submits said the job was never declared."""
    write_job("true", TRUE)
    target = tmp_path / "target.toml"
    target.write_text(TRUE)
    (jobs_dir / "linked.toml").symlink_to(target)
    server = start_server(jobs_dir)
    assert "linked" in [job["name"] for job in jobs_of(server)["jobs"]]  # a link is a job file
    target.unlink()
    (jobs_dir / "loop.toml").symlink_to("loop.toml")
    reported(server, "linked.toml", "a symbolic link to nothing")
    reported(server, "loop.toml", "Too many levels of symbolic links")
    assert "linked" not in [job["name"] for job in jobs_of(server)["jobs"]]
    runs_true(server)
    target.write_text(TRUE)  # its target back: the job is back
    wait_for(lambda: "linked" in [job["name"] for job in jobs_of(server)["jobs"]],
             what="the linked job back")  # fmt: skip
    assert "linked.toml" not in load_errors(server)


def test_job_file_names_that_are_not_names_are_load_errors_every_route_can_show(
    start_server, write_job, jobs_dir
) -> None:
    """A file name whose bytes are not UTF-8 reached /v1/status as lone surrogates, which no
    JSON encoder takes: a 500 for as long as the file was there."""
    write_job("true", TRUE)
    with open(os.fsencode(jobs_dir) + b"/bad\xff.toml", "wb") as f:
        f.write(TRUE.encode())
    write_job("esc\x1b", TRUE)
    server = start_server(jobs_dir)
    for name in ("bad\\xff.toml", "esc\x1b.toml"):
        assert "job names are letters, digits" in load_errors(server)[name]
        assert "job names are letters, digits" in status_errors(server)[name]
    runs_true(server)
