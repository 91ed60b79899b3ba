"""Each example job, run by a real server with real processes, ends as its program did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runyard.models import RunState

pytestmark = pytest.mark.e2e


def test_simulation_succeeds_with_log_progress_and_artifacts(start_server, tmp_path: Path) -> None:
    server = start_server()
    with server.client() as c:
        run = c.submit("simulate", {"ticks": 500, "seed": 7})
        done = server.wait_run(c, run.id)
        assert done.state is RunState.SUCCEEDED
        assert done.exit_code == 0
        log, _ = c.logs(run.id)
        assert b"tick 500/500" in log
        assert b"done" in log
        paths = {a.path for a in c.artifacts(run.id).artifacts}
        assert paths == {"outputs/result.json", "outputs/trajectory.csv", "outputs/trajectory.png"}
        png = c.download(run.id, "outputs/trajectory.png", tmp_path / "t.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and png[12:16] == b"IHDR"
        result = json.loads(
            c.download(run.id, "outputs/result.json", tmp_path / "r.json").read_text()
        )
        assert result["ticks"] == 500
        assert result["seed"] == 7
        # params.json is written to the workspace for the program (not a declared artifact)
        params = json.loads(
            (server.data_dir / "runs" / run.id / "workspace" / "params.json").read_text()
        )
        assert params == {"ticks": 500, "seed": 7, "drift": 0.0, "pace": 0.0}
        assert done.attempts is not None
        assert [(a.number, a.exit_code, a.outcome) for a in done.attempts] == [(1, 0, "exit")]


def test_agent_in_git_workspace_leaves_a_diff(start_server, tmp_path: Path) -> None:
    server = start_server()
    with server.client() as c:
        run = c.submit("agent", {"task": "explain the queue", "file": "README.md"})
        done = server.wait_run(c, run.id)
        assert done.state is RunState.SUCCEEDED, c.logs(run.id)[0]
        diff = c.download(run.id, "outputs/changes.diff", tmp_path / "d.diff").read_text()
        assert "+<!-- agent note: explain the queue -->" in diff
    workspace = server.data_dir / "runs" / run.id / "workspace"
    assert (workspace / ".git").is_dir()  # its own clone, not a shared working tree


def test_failing_job_keeps_its_exit_code_and_stderr(start_server) -> None:
    server = start_server()
    with server.client() as c:
        run = c.submit("fail", {"code": 7})
        done = server.wait_run(c, run.id)
        assert done.state is RunState.FAILED
        assert done.exit_code == 7
        assert done.reason == "exit code 7"
        assert c.logs(run.id)[0] == b"about to fail\n"


def test_short_jobs_succeed(start_server) -> None:
    server = start_server()
    with server.client() as c:
        runs = [c.submit("true"), c.submit("sleeper", {"seconds": 0.1})]
        for run in runs:
            done = server.wait_run(c, run.id)
            assert done.state is RunState.SUCCEEDED
            assert done.exit_code == 0


def test_missing_executable_fails_with_a_reason(start_server, write_job, jobs_dir) -> None:
    write_job("ghost", 'command = ["/nonexistent/program"]\n')
    server = start_server(jobs_dir)
    with server.client() as c:
        done = server.wait_run(c, c.submit("ghost").id)
        assert done.state is RunState.FAILED
        assert done.exit_code == 127
        assert "cannot start" in (done.reason or "")


def test_summarize_reads_an_uploaded_table(start_server, tmp_path: Path) -> None:
    server = start_server()
    table = tmp_path / "scores.csv"
    table.write_text("name,score,age\nann,3,31\nbob,5,42\n")
    with server.client() as c:
        run = c.submit("summarize", {"table": table}, wait=60)
        assert run.state == "succeeded", run.reason
        got = c.download(run.id, "outputs/summary.json", tmp_path / "summary.json")
    summary = json.loads(got.read_text())
    assert summary["rows"] == 2 and summary["columns"] == ["name", "score", "age"]
    assert summary["numeric"]["score"] == {"min": 3.0, "mean": 4.0, "max": 5.0}
