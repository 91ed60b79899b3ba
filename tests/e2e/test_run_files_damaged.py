"""A run's program can make what it likes of the files beside its workspace: its log, its
exit file's place, its whole run directory. The server opens them as the regular files the
supervisor made or not at all (a FIFO never blocks a thread, a link never leads elsewhere, a
directory is no 500), and a run directory removed by its own program never holds the attempt
as running nor readiness as failing."""

from __future__ import annotations

import pytest

from runyard.models import RunState
from tests import web
from tests.support import wait_for

pytestmark = pytest.mark.e2e

# each replaces its own log (stdout still goes to the file it had open) and succeeds
SABOTEURS = {
    "fifo": "echo before; rm ../attempt-1.log; mkfifo ../attempt-1.log; echo after",
    "dir": "echo before; rm ../attempt-1.log; mkdir ../attempt-1.log; echo after",
    "link": "echo before; rm ../attempt-1.log; ln -s /etc/passwd ../attempt-1.log",
    "loop": "echo before; rm ../attempt-1.log; ln -s attempt-1.log ../attempt-1.log",
}


def test_a_log_made_into_something_else_is_a_409_never_read(
    start_server, write_job, jobs_dir
) -> None:
    """It read as an empty log (200), which a client cannot tell from a program that printed
    nothing (a probe): now a 409 saying the log is no plain file, before any stream starts."""
    for name, script in SABOTEURS.items():
        write_job(name, f"command = ['sh', '-c', '{script}']\nartifacts = []\n")
    write_job("true", "command = ['true']\n")
    server = start_server(jobs_dir)
    with server.client() as c:
        runs = {name: c.submit(name) for name in SABOTEURS}
        for name, run in runs.items():
            assert server.wait_run(c, run.id).state is RunState.SUCCEEDED, name
    for name, run in runs.items():
        for _ in range(70):  # more reads than the thread pool has threads: none may block
            resp = web.get(f"{server.url}/v1/runs/{run.id}/logs", timeout=10)
            assert resp.status_code == 409, (name, resp.text[:200])
            assert "the attempt's log is not a plain file" in resp.json()["detail"], name
        stream = web.get(f"{server.url}/v1/runs/{run.id}/logs/stream", timeout=10)
        assert stream.status_code == 409, name
        assert b"root:" not in stream.content, name
        head = web.request("HEAD", f"{server.url}/v1/runs/{run.id}/logs", timeout=10)
        assert head.status_code == 409, name
    assert web.post(f"{server.url}/v1/runs", json={"job": "true"}).status_code == 202


def test_a_run_directory_its_program_removed_holds_nothing(
    start_server, write_job, jobs_dir
) -> None:
    write_job("vanish", "command = ['sh', '-c', 'rm -rf \"$(dirname $RUNYARD_WORKSPACE)\"']\n")
    write_job("true", "command = ['true']\n")
    server = start_server(jobs_dir, capacity=1)
    with server.client() as c:
        run = c.submit("vanish")
        assert server.wait_run(c, run.id).state is RunState.SUCCEEDED
        after = c.submit("true")  # the one slot is free again
        assert server.wait_run(c, after.id).state is RunState.SUCCEEDED

    def ready() -> bool:
        return web.get(f"{server.url}/health/ready").status_code == 200

    wait_for(ready, what="readiness, no exit file held unwritten")


# each puts something in the way of its own exit file, then exits 3
BLOCKERS = {
    "tmp_dir": "mkdir ../attempt-1.exit.json.tmp",
    "final_dir": "mkdir -p ../attempt-1.exit.json/inner",
    "tmp_link": "ln -s /etc/passwd ../attempt-1.exit.json.tmp",
}


def test_what_a_program_puts_where_its_exit_file_goes_is_set_aside(
    start_server, write_job, jobs_dir
) -> None:
    """A probe: a directory where the exit file's temporary name goes made its write fail for
    good (EISDIR, never retried): the attempt's end lived only in the supervisor's event,
    and a server that had not recorded it called the run lost. The obstacle is renamed aside
    and the file written, so its real exit code is on disk for any later reconcile."""
    for name, script in BLOCKERS.items():
        write_job(name, f"command = ['sh', '-c', '{script}; exit 3']\nartifacts = []\n")
    server = start_server(jobs_dir)
    with server.client() as c:
        runs = {name: c.submit(name) for name in BLOCKERS}
        for name, run in runs.items():
            done = server.wait_run(c, run.id)
            assert (done.state, done.exit_code) == (RunState.FAILED, 3), name
    for name, run in runs.items():
        root = server.data_dir / "runs" / run.id
        record = root / "attempt-1.exit.json"
        assert record.is_file() and not record.is_symlink(), name
        assert '"exit_code":3' in record.read_text(), name
        if name != "tmp_link":  # a link under the temp name is removed (nothing of it kept)
            assert any(".stale-" in p.name for p in root.iterdir()), name
    assert "root:" not in "".join(  # the link was never written through
        (server.data_dir / "runs" / r.id / "attempt-1.exit.json").read_text() for r in runs.values()
    )


def test_a_run_directory_made_a_link_leads_no_exit_file_elsewhere(
    start_server, write_job, jobs_dir, tmp_path
) -> None:
    """A probe: a program moved its run's directory aside and left a link to a directory of
    its choosing in its place; the supervisor (root, maybe) wrote the exit file there. The
    link is set aside and the record written in a directory of the run's own."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = f'r=$(dirname "$RUNYARD_WORKSPACE"); cd /; mv "$r" "$r.moved"; ln -s {elsewhere} "$r"'
    write_job("relink", f"command = ['sh', '-c', '{script}; exit 5']\nartifacts = []\n")
    server = start_server(jobs_dir)
    with server.client() as c:
        done = server.wait_run(c, c.submit("relink").id)
        assert (done.state, done.exit_code) == (RunState.FAILED, 5)
    assert list(elsewhere.iterdir()) == []  # nothing written through the link
    root = server.data_dir / "runs" / done.id
    assert root.is_dir() and not root.is_symlink()
    assert '"exit_code":5' in (root / "attempt-1.exit.json").read_text()
    aside = [p for p in root.parent.iterdir() if p.name.startswith(f"{done.id}.stale-")]
    assert len(aside) == 1 and aside[0].is_symlink()  # the link, kept aside
