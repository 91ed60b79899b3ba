"""The `runyard` command against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def runyard(server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runyard", *args, "--server", server.url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_submit_follow_prints_log_and_exits_with_run_status(start_server) -> None:
    server = start_server()
    ok = runyard(server, "submit", "simulate", "-p", "ticks=300", "-p", "seed=3", "--follow")
    assert ok.returncode == 0, ok.stderr
    assert "tick 300/300" in ok.stdout
    assert "succeeded" in ok.stderr
    failed = runyard(server, "submit", "fail", "-p", "code=9", "-f")
    assert failed.returncode == 9
    assert "about to fail" in failed.stdout


def test_submit_ls_show_logs_cancel_artifacts(start_server, tmp_path: Path) -> None:
    server = start_server()
    run_id = runyard(
        server, "submit", "simulate", "-p", "ticks=100", "-l", "team=cfd"
    ).stdout.strip()
    with server.client() as c:
        server.wait_run(c, run_id)
    listed = json.loads(runyard(server, "ls", "-l", "team=cfd", "--json").stdout)
    assert [r["id"] for r in listed["runs"]] == [run_id]
    shown = json.loads(runyard(server, "show", run_id, "--json").stdout)
    assert shown["state"] == "succeeded"
    assert "done" in runyard(server, "logs", run_id).stdout
    out = runyard(server, "artifacts", run_id, "--download", str(tmp_path / "dl"))
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "dl" / "outputs" / "result.json").read_text())["ticks"] == 100
    sleeper = runyard(server, "submit", "sleeper", "-p", "seconds=60").stdout.strip()
    assert runyard(server, "cancel", sleeper).returncode == 0
    with server.client() as c:
        assert server.wait_run(c, sleeper).state.value == "cancelled"


def test_errors_are_reported_not_raised(start_server) -> None:
    server = start_server()
    bad = runyard(server, "submit", "simulate", "-p", "ticks=0")
    assert bad.returncode == 2
    assert "params.ticks" in bad.stderr
    assert "Traceback" not in bad.stderr
    jobs = runyard(server, "jobs")
    assert "simulate" in jobs.stdout


def test_follow_crosses_retries_and_a_server_restart(start_server, write_job, jobs_dir) -> None:
    # the first attempt goes on until the test opens its gate: the follower (a process whose
    # start takes seconds on a busy machine) attaches to it however slow it is to start
    gate = jobs_dir.parent / "gate"
    write_job(
        "steps",
        'command = ["sh", "-c", "i=0; while [ $i -lt {n} ] || [ $RUNYARD_ATTEMPT -lt 2 -a '
        "! -e {gate} ]; do echo step $i of attempt $RUNYARD_ATTEMPT; i=$((i+1)); sleep 0.1; "
        'done; [ $RUNYARD_ATTEMPT -ge 2 ]"]\n'
        "max_attempts = 2\nretry_on = [1]\n[backoff]\nbase_s = 0.1\njitter = 0\n"
        '[params.n]\ntype = "int"\ndefault = 30\n[params.gate]\ntype = "str"\n',
    )
    server = start_server(jobs_dir)
    with server.client() as c:
        run = c.submit("steps", {"n": 30, "gate": str(gate)})
    captured = jobs_dir.parent / "follower.out"
    with captured.open("wb") as sink:
        follower = subprocess.Popen(
            [sys.executable, "-m", "runyard", "logs", run.id, "-f", "--server", server.url],
            stdout=sink, stderr=subprocess.PIPE,
        )  # fmt: skip
    log1 = server.data_dir / "runs" / run.id / "attempt-1.log"
    from tests.support import wait_for

    wait_for(lambda: b"step 3 of attempt 1" in captured.read_bytes(), what="the follower")
    server.stop()  # the stream is cut mid-attempt; the program runs on under the supervisor
    restarted = start_server(jobs_dir, port=server.port)
    gate.touch()  # attempt 1 may end now (and fail: it is retried)
    _, err = follower.communicate(timeout=60)
    out = captured.read_bytes()
    assert follower.returncode == 0, err
    with restarted.client() as c:
        done = restarted.wait_run(c, run.id)
    assert done.state.value == "succeeded"
    assert done.attempt == 2
    expected = log1.read_bytes() + (log1.parent / "attempt-2.log").read_bytes()
    assert out == expected  # both attempts, every byte once, across the restart


def test_run_batch_and_schedule_commands(start_server) -> None:
    server = start_server()
    done = runyard(server, "run", "fail", "-p", "code=4")
    assert done.returncode == 4
    assert "about to fail" in done.stdout
    made = runyard(server, "batch", "simulate", "-p", "ticks=10", "--sweep", "seed=[1,2,3]")
    assert made.returncode == 0, made.stderr
    assert "3 runs of simulate" in made.stdout
    batch_id = made.stdout.split()[0]
    listed = json.loads(runyard(server, "ls", "--batch", batch_id, "--json").stdout)
    assert sorted(r["params"]["seed"] for r in listed["runs"]) == [1, 2, 3]
    shown = runyard(server, "batches", "show", batch_id)
    assert shown.returncode == 0, shown.stderr
    assert f"{batch_id}  3 runs of simulate" in shown.stdout
    listed_batches = json.loads(runyard(server, "batches", "ls", "--json").stdout)
    assert [b["id"] for b in listed_batches["batches"]] == [batch_id]
    sid = runyard(server, "schedule", "create", "true", "--every", "3600").stdout.strip()
    assert sid in runyard(server, "schedule", "ls").stdout
    assert runyard(server, "schedule", "pause", sid).returncode == 0
    with server.client() as c:
        assert [s.paused for s in c.schedules()] == [True]
    assert runyard(server, "schedule", "rm", sid).returncode == 0
    bad = runyard(server, "schedule", "create", "true", "--cron", "nonsense")
    assert bad.returncode == 2
    assert "cron" in bad.stderr


def test_batches_are_listed_shown_and_cancelled(start_server) -> None:
    """`runyard batches`: what `runyard batch` made, read back and cancelled by its id."""
    server = start_server()
    first = runyard(server, "batch", "sleeper", "-p", "seconds=60", "--iterations", "3")
    second = runyard(server, "batch", "sleeper", "-p", "seconds=60", "--iterations", "2")
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    first_id, second_id = first.stdout.split()[0], second.stdout.split()[0]
    table = runyard(server, "batches", "ls")
    assert table.returncode == 0, table.stderr
    assert table.stdout.index(second_id) < table.stdout.index(first_id)  # newest first
    paged = runyard(server, "batches", "ls", "--limit", "1")
    assert second_id in paged.stdout and first_id not in paged.stdout
    assert f"--cursor {second_id}" in paged.stderr  # where the next page starts
    rest = runyard(server, "batches", "ls", "--limit", "1", "--cursor", second_id)
    assert first_id in rest.stdout and second_id not in rest.stdout
    cancelled = runyard(server, "batches", "cancel", first_id)
    assert cancelled.returncode == 0, cancelled.stderr
    with server.client() as c:
        for r in c.runs(batch=first_id).runs:
            assert server.wait_run(c, r.id).state.value == "cancelled"
        assert {r.state.value for r in c.runs(batch=second_id).runs} <= {"queued", "running"}
    assert "cancelled 3" in runyard(server, "batches", "show", first_id).stdout
    assert runyard(server, "batches", "cancel", second_id).returncode == 0
    missing = runyard(server, "batches", "show", "01NOSUCHBATCH")
    assert missing.returncode != 0
    assert "Traceback" not in missing.stderr
    assert "does not exist" in missing.stderr
