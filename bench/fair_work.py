"""The per-run work runyard does, for the peers' fair tasks: a fresh directory, the program's
output to a log file in it, a new session. No other bench library is imported here: RQ's work
horse imports it for every job."""

from __future__ import annotations

import os
import subprocess

PROGRAM = ["/bin/true"]


def run_dir(root: str, i: int) -> str:
    path = os.path.join(root, f"r{i}")
    os.makedirs(path)
    return path


def fair_run(root: str, i: int) -> int:
    path = run_dir(root, i)
    with open(os.path.join(path, "log"), "wb") as log:
        return subprocess.run(
            PROGRAM, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=path,
            check=True,
        ).returncode  # fmt: skip
