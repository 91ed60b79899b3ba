"""Finding a program by its attempt's key with no pid to go by (executor.py `still_runs`, what
recovery asks before it believes an exit file): a scan of every process's environment. A
process in the middle of an exec shows an empty one for a moment; the scan missed it then (the
executor contract's test did, once in four runs, as its program's `sh` exec'd `sleep`), and a
program that execs over and over could hide from it. Real processes, a real /proc."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

from runyard.execution.executor import _carrying

# re-exec itself for ever, with a little work between two execs (builtins only: no child
# carries the key in its place while it is between two images)
REEXEC = 'i=0; while [ "$i" -lt 300 ]; do i=$((i+1)); done; exec sh "$0"\n'


def test_a_program_that_keeps_exec_ing_is_never_missed(tmp_path: Path) -> None:
    script = tmp_path / "again.sh"
    script.write_text(REEXEC)
    key = f"scan{uuid.uuid4().hex[:12]}.1"
    env = {"PATH": os.environ["PATH"], "RUNYARD_ATTEMPT_KEY": key}
    proc = subprocess.Popen(["sh", str(script)], env=env)
    try:
        found = [bool(_carrying((key,))) for _ in range(300)]
        assert proc.poll() is None  # it kept going all along
        assert all(found), f"missed in {found.count(False)} of {len(found)} scans"
    finally:
        proc.kill()
        proc.wait()
    assert not _carrying((key,))  # and found no more once it is gone


def test_processes_with_no_environment_cost_a_scan_one_settling_wait(
    tmp_path: Path, monkeypatch
) -> None:
    """An empty environment is read again in case it is an exec's: all of them together,
    never a wait each (thirty `env -i` programs would have made a scan 0.6 s, a host's
    worth of them minutes)."""
    from runyard.execution import kills

    waits: list[float] = []
    real_sleep = kills.time.sleep
    monkeypatch.setattr(kills.time, "sleep", lambda s: (waits.append(s), real_sleep(s)))
    bare = [subprocess.Popen(["env", "-i", "sleep", "60"]) for _ in range(30)]
    try:
        for proc in bare:  # each has exec'd sleep (its environment empty for good)
            while Path(f"/proc/{proc.pid}/comm").read_text().strip() != "sleep":
                real_sleep(0.001)
        assert not _carrying(("nobody.1",))
        assert 0 < len(waits) <= kills.SETTLE_TRIES
    finally:
        for proc in bare:
            proc.kill()
            proc.wait()
