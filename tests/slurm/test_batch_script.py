"""The batch script itself, run by bash as a compute node would (no Slurm needed): what it
records for each way a program can end, and for the signals Slurm and runyard send it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from runyard.execution.protocol import ExitRecord
from runyard.execution.slurm.script import ScriptSpec, batch_script


def run_script(tmp_path: Path, argv: list[str], *, requeue: bool = False,
               send: signal.Signals | None = None) -> dict[str, object] | None:  # fmt: skip
    workspace, exit_path = tmp_path / "ws", tmp_path / "attempt-1.exit.json"
    workspace.mkdir(exist_ok=True)
    ready = tmp_path / "ready"
    script = batch_script(ScriptSpec(
        key="RUN.1", argv=argv, cwd=str(workspace), exit_path=str(exit_path),
        env={"PATH": os.environ["PATH"], "READY": str(ready)},
        progress_path=str(tmp_path / "progress.jsonl"), requeue=requeue,
    ))  # fmt: skip
    env = {"PATH": os.environ["PATH"], "SLURM_JOB_ID": "77", "SLURM_NODELIST": "n1"}
    if send is not None:
        os.mkfifo(ready)  # before the program can write to it
    shell = subprocess.Popen(["bash", "-c", script], env=env)
    if send is not None:
        with ready.open() as fh:  # the program says it runs: then the signal
            fh.read()
        shell.send_signal(send)
    assert shell.wait(30) == 0
    if not exit_path.exists():
        return None
    record: dict[str, object] = json.loads(exit_path.read_text())
    assert ExitRecord.parse(record, "RUN.1") is not None  # the server reads it as it is
    return record


WAITS = 'echo up > "$READY"; exec sleep 30'


def test_an_exit_code_and_the_job_id_as_pid(tmp_path: Path) -> None:
    record = run_script(tmp_path, ["sh", "-c", "exit 3"])
    assert record is not None
    assert (record["exit_code"], record["signal"], record["pid"]) == (3, None, 77)


def test_a_death_by_signal(tmp_path: Path) -> None:
    record = run_script(tmp_path, ["sh", "-c", "kill -KILL $$"])
    assert record is not None and (record["exit_code"], record["signal"]) == (None, 9)


def test_a_missing_command_is_found_before_anything_runs(tmp_path: Path) -> None:
    record = run_script(tmp_path, ["no-such-command-here"])
    assert record is not None and record["exit_code"] == 127
    assert "cannot start" in str(record["error"])


def test_the_program_sees_its_allocation_and_nothing_of_the_shell(tmp_path: Path) -> None:
    record = run_script(tmp_path, ["sh", "-c", "env > env.txt"])
    assert record is not None and record["exit_code"] == 0
    seen = (tmp_path / "ws" / "env.txt").read_text().splitlines()
    assert "SLURM_JOB_ID=77" in seen and "SLURM_NODELIST=n1" in seen
    assert {line.split("=")[0] for line in seen} <= {"PATH", "READY", "PWD", "SLURM_JOB_ID",
                                                       "SLURM_NODELIST", "SHLVL", "_"}  # fmt: skip


@pytest.mark.parametrize("requeue", [False, True])
def test_usr1_is_slurms_time_limit_warning_recorded_as_a_timeout(
    tmp_path: Path, requeue: bool
) -> None:
    record = run_script(tmp_path, ["sh", "-c", WAITS], requeue=requeue, send=signal.SIGUSR1)
    assert record is not None
    assert (record["signal"], record["killed_by"]) == (signal.SIGTERM, "timeout")


def test_term_ends_a_job_that_may_not_requeue_and_leaves_no_record_for_one_that_may(
    tmp_path: Path,
) -> None:
    ended = run_script(tmp_path, ["sh", "-c", WAITS], send=signal.SIGTERM)
    assert ended is not None and (ended["signal"], ended["killed_by"]) == (signal.SIGTERM, None)
    (tmp_path / "attempt-1.exit.json").unlink()
    (tmp_path / "ready").unlink()
    # preemption or cancel: Slurm brings it back, or the server records the end itself
    assert run_script(tmp_path, ["sh", "-c", WAITS], requeue=True, send=signal.SIGTERM) is None
