"""Durable files are data from outside: a damaged exit file ends its own attempt `lost`, says
why, and touches nothing else; one run's damage or failing store write never stops a start."""

from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from runyard.models import RunState
from tests import web
from tests.support import ServerProcess, processes_of, wait_for

pytestmark = pytest.mark.e2e

# Blocks on a fifo in its workspace until the test writes a line to it, then ends with 5:
# a program that "finishes while the server is down", costing no CPU while it waits.
GATE = 'command = ["sh", "-c", "mkfifo gate && echo waiting && read x < gate; exit 5"]\n'


def good(record: dict[str, Any], **changes: object) -> bytes:
    return json.dumps({**record, **changes}).encode()


# what each damaged run's exit file is made to say, and what its reason must name
DAMAGE: dict[str, tuple[Any, str]] = {
    "list": (lambda r: b"[1,2,3]", "not a JSON object"),
    "null": (lambda r: b"null", "not a JSON object"),
    "bytes": (lambda r: b"\x00garbage{", "not JSON"),
    "key": (lambda r: good(r, key="garbage"), "key is not of the form"),
    "ended_null": (lambda r: good(r, ended_at=None), "ended_at is missing"),
    "ended_text": (lambda r: good(r, ended_at="yesterday"), "ended_at is not a number"),
    "signal": (lambda r: good(r, exit_code=None, signal="x"), "signal is not an integer"),
    "exit_text": (lambda r: good(r, exit_code="0"), "exit_code is not an integer"),
    # well-formed, but not what the store knows of the attempt
    "ended_1970": (lambda r: good(r, ended_at=2.0), "is before its start"),
    "ended_9999": (lambda r: good(r, ended_at=253402300000.0), "is in the future"),
    "pid": (lambda r: good(r, pid=1), "is not its program's"),
    # `other` is filled in with the key of a run that is still running
    "other": (lambda r: good(r, exit_code=0), "key names another attempt"),
}


def run_dir(server: ServerProcess, run_id: str) -> Path:
    return server.data_dir / "runs" / run_id


def waiting(server: ServerProcess, run_id: str) -> bool:
    log = run_dir(server, run_id) / "attempt-1.log"
    return log.exists() and b"waiting" in log.read_bytes()


def release(server: ServerProcess, run_id: str) -> None:
    """Let a gate program end: one line into its fifo (never blocks: ENXIO until it reads)."""
    fifo = run_dir(server, run_id) / "workspace" / "gate"

    def written() -> bool:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno in (errno.ENXIO, errno.ENOENT):
                return False
            raise
        try:
            os.write(fd, b"go\n")
        finally:
            os.close(fd)
        return True

    wait_for(written, what=f"run {run_id} reading its gate")


def gates_waiting(server: ServerProcess, count: int) -> list[str]:
    """Runs whose programs wait at their gate, each start recorded (its pid in the store: a
    record is checked against it; the start is written as the program runs, not waited for,
    and a server killed before it lands leaves an attempt whose pid nobody knows)."""
    with server.client() as c:
        ids = [c.submit("gate").id for _ in range(count)]

        def started(run_id: str) -> bool:
            run = c.run(run_id)
            return run.state is RunState.RUNNING and bool(run.attempts and run.attempts[0].pid)

        wait_for(lambda: all(started(i) for i in ids), what="all running, their starts recorded")
    wait_for(lambda: all(waiting(server, i) for i in ids), what="all waiting at their gate")
    return ids


def ended_while_down(server: ServerProcess, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Kill the server, let the programs end, and return their (true) exit records."""
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    for run_id in ids:
        release(server, run_id)
    files = [run_dir(server, i) / "attempt-1.exit.json" for i in ids]
    wait_for(lambda: all(f.exists() for f in files), what="exit files written")
    return {i: json.loads(f.read_bytes()) for i, f in zip(ids, files, strict=True)}


def test_damaged_exit_files_make_their_own_attempt_lost_and_nothing_else(
    start_server, write_job, jobs_dir: Path
) -> None:
    write_job("gate", GATE)
    server = start_server(jobs_dir, capacity=len(DAMAGE) + 1)
    *damaged_ids, victim = gates_waiting(server, len(DAMAGE) + 1)
    records = ended_while_down(server, damaged_ids)
    damaged = dict(zip(DAMAGE, damaged_ids, strict=True))
    for name, run_id in damaged.items():
        content = DAMAGE[name][0](records[run_id])
        if name == "other":  # names the victim, whose program still runs
            content = good(records[run_id], exit_code=0, key=f"{victim}.1")
        (run_dir(server, run_id) / "attempt-1.exit.json").write_bytes(content)

    server = start_server(jobs_dir, capacity=len(DAMAGE) + 1)  # starts: no "startup failed"
    with server.client() as c:
        listed = {r.id: r for r in c.runs(limit=100).runs}  # the list answers (no 500)
        for name, run_id in damaged.items():
            run = c.run(run_id)  # and so does each run
            assert run.state is RunState.FAILED, name
            assert (run.reason or "").startswith("lost: unreadable exit file ("), run.reason
            assert DAMAGE[name][1] in (run.reason or ""), (name, run.reason)
            assert run.exit_code is None  # nothing from the damaged file was believed
            assert [a.outcome for a in run.attempts or []] == ["lost"]
            assert listed[run_id].state is RunState.FAILED
        # the run the forged key named is untouched: still running, its program alive
        assert c.run(victim).state is RunState.RUNNING
        alive = [p.environ().get("RUNYARD_RUN_ID") for p in processes_of(server.data_dir)]
        assert victim in alive
        assert web.get(f"{server.url}/health/ready").status_code == 200
        release(server, victim)
        done = server.wait_run(c, victim)
        # it ends with its own true outcome, and holds no slot any more
        assert (done.state, done.exit_code, done.reason) == (RunState.FAILED, 5, "exit code 5")
        wait_for(lambda: web.get(f"{server.url}/health").json()["active"] == 0, what="slot")


def start_unready(server: ServerProcess) -> ServerProcess:
    """Start a server and wait until it answers, not until it is ready: its readiness may
    rightly say no while a reconcile keeps failing."""
    env = {**os.environ, "RUNYARD_LOG_FORMAT": "json", **server.env}
    argv = [sys.executable, *server.entry, "serve", "--jobs", str(server.jobs_dir),
            "--data-dir", str(server.data_dir), "--port", str(server.port),
            "--capacity", str(server.capacity)]  # fmt: skip
    with server.log_path.open("ab") as log:
        server.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)

    def live() -> bool:
        assert server.proc is not None
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited: {server.log_path.read_text()[-3000:]}")
        try:
            return web.get(f"{server.url}/v1/runs", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(live, timeout=30, what="server answering")
    return server


def test_one_runs_failing_store_write_never_stops_the_start_and_is_retried(
    start_server, write_job, jobs_dir: Path, tmp_path: Path
) -> None:
    write_job("gate", GATE)
    write_job("quick", 'command = ["true"]\n')
    server = start_server(jobs_dir, capacity=3)
    stuck, other = gates_waiting(server, 2)
    ended_while_down(server, [stuck, other])
    # Every write to one run's row fails, as a full or failing disk would fail it.
    db = sqlite3.connect(server.data_dir / "runyard.db", isolation_level=None)
    db.execute(
        f"CREATE TRIGGER injected BEFORE UPDATE ON runs WHEN OLD.id = '{stuck}' "
        "BEGIN SELECT RAISE(ABORT, 'injected write failure'); END"
    )
    restarted = start_unready(replace(server, log_path=tmp_path / "restarted.log", proc=None))
    try:
        with restarted.client() as c:
            assert c.run(other).exit_code == 5  # the others are reconciled
            assert c.run(stuck).state is RunState.RUNNING  # not given up on, not made up
            db.execute("DROP TRIGGER injected")  # the fault clears: no restart needed
            # a run that moves shows the store takes writes again: the retry need not wait
            # out its backoff
            c.submit("quick")
            done = restarted.wait_run(c, stuck)
            assert (done.state, done.exit_code) == (RunState.FAILED, 5)
            wait_for(
                lambda: web.get(f"{restarted.url}/health/ready").status_code == 200,
                what="ready once reconciled",
            )
            active = lambda: web.get(f"{restarted.url}/health").json()["active"] == 0  # noqa: E731
            wait_for(active, what="its slot given back")
    finally:
        db.close()
        restarted.stop()


def test_hostile_progress_lines_are_skipped_and_the_run_stays_readable(
    start_server, write_job, jobs_dir: Path
) -> None:
    lines = [
        b'{"fraction": NaN}',
        b'{"fraction": 1e999}',
        b'{"fraction": -Infinity}',
        b'{"n": 1' + b"0" * 30 + b"}",  # over 2**63
        b'{"d":' * 300 + b"1" + b"}" * 300,  # parses, but too deep to answer with
        b'{"d":' * 50_000 + b"1" + b"}" * 50_000,  # too deep to parse, and too long
        b'{"message": "' + b"x" * 200_000 + b'"}',  # far over the line limit
        b'{"message": "a\\u0000b"}',  # PostgreSQL refuses NUL
        b'{"message": "\\ud800"}',  # not UTF-8
        b'{"fraction": 0.5, "message": "half way"}',
    ]
    (jobs_dir / "progress.txt").write_bytes(b"\n".join(lines) + b"\n")
    write_job(
        "hostile_progress",
        'command = ["sh", "-c", "cat \\"$0\\" >> \\"$RUNYARD_PROGRESS_FILE\\"", '
        '"{jobs_dir}/progress.txt"]\n',
    )
    server = start_server(jobs_dir)
    with server.client() as c:
        run = server.wait_run(c, c.submit("hostile_progress").id)
        assert run.state is RunState.SUCCEEDED
        assert run.progress_skipped == len(lines) - 1
        assert web.get(f"{server.url}/v1/runs/{run.id}").status_code == 200
        assert web.get(f"{server.url}/v1/runs").status_code == 200
        # only the good line became progress (what is kept is strict JSON: unit-tested)
        assert run.progress == {"fraction": 0.5, "message": "half way"}
