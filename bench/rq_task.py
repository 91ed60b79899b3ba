"""RQ's tasks, in a module of their own: RQ's work horse imports it for every job, so it must not
pull in the other peers' libraries."""

import subprocess

from bench.fair_work import fair_run


def rq_true() -> int:
    return subprocess.run(["/bin/true"], check=True).returncode


def rq_fair(root: str, i: int) -> int:
    return fair_run(root, i)
