"""Per-job limits enforced on real programs: memory, CPU time, open files, log size, user."""

from __future__ import annotations

import os
import pwd
import sys

import pytest

from runyard.models import RunState
from tests import web

pytestmark = pytest.mark.e2e
PY = sys.executable

JOBS = {
    "hog": f'command = ["{PY}", "-c", "x = bytearray(600 * 2**20)"]\n[limits]\nmemory_mb = 300\n',
    "spin": 'command = ["sh", "-c", "while :; do :; done"]\n[limits]\ncpu_s = 1\n',
    "files": f'command = ["{PY}", "-c", "fs = [open(\'/dev/null\') for _ in range(100)]"]\n'
    "[limits]\nopen_files = 16\n",
    "chatty_kill": 'command = ["yes", "runyard"]\n[limits]\nmax_log_mb = 1\non_log_cap = "kill"\n',
    "chatty_cut": f'command = ["{PY}", "-c", "import os\\nfor _ in range(300):\\n    '
    "try: os.write(1, b'x' * 10000)\\n    except OSError: pass\\n"
    "open('after-cap', 'w').write('ran on')\"]\n"
    '[limits]\nmax_log_mb = 1\non_log_cap = "cut"\n',
    "unlimited": f'command = ["{PY}", "-c", "x = bytearray(400 * 2**20)"]\n',
}


@pytest.fixture
def server(start_server, write_job, jobs_dir):
    for name, text in JOBS.items():
        write_job(name, text)
    return start_server(jobs_dir)


def finish(server, job: str):
    with server.client() as c:
        run = c.submit(job)
        return server.wait_run(c, run.id, timeout=60), c.logs(run.id, limit=4 * 2**20)[0]


def test_memory_limit(server) -> None:
    run, log = finish(server, "hog")
    assert run.state is RunState.FAILED
    assert b"MemoryError" in log
    assert finish(server, "unlimited")[0].state is RunState.SUCCEEDED  # the limit did it


def test_cpu_limit(server) -> None:
    run, _ = finish(server, "spin")
    assert run.state is RunState.FAILED
    assert "SIGXCPU" in (run.reason or "")
    assert "limits.cpu_s" in (run.reason or "")


def test_open_files_limit(server) -> None:
    run, log = finish(server, "files")
    assert run.state is RunState.FAILED
    assert b"Too many open files" in log


def test_log_cap_kills(server) -> None:
    run, log = finish(server, "chatty_kill")
    assert run.state is RunState.FAILED
    assert "limits.max_log_mb" in (run.reason or "")
    assert log.endswith(b"[runyard: log cut at 1048576 bytes (limits.max_log_mb)]\n")
    assert len(log) < 2**20 + 100


def test_log_cap_cuts_and_the_program_runs_on(server) -> None:
    run, log = finish(server, "chatty_cut")
    assert run.state is RunState.SUCCEEDED  # it kept running past the cap
    assert run.reason == "exit code 0 (log cut at limits.max_log_mb)"  # said, not only logged
    assert log.endswith(b"[runyard: log cut at 1048576 bytes (limits.max_log_mb)]\n")
    assert len(log) < 2**20 + 100  # 3 MB written, 1 MiB kept
    after = server.data_dir / "runs" / run.id / "workspace" / "after-cap"
    assert after.read_text() == "ran on"


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another user needs root")
def test_run_as_user(start_server, write_job, jobs_dir) -> None:
    write_job(
        "whoami", 'command = ["sh", "-c", "id -u; touch made-here; echo ok"]\nrun_as = "nobody"\n'
    )
    server = start_server(jobs_dir)
    run, log = finish(server, "whoami")
    assert run.state is RunState.SUCCEEDED, log
    assert log.splitlines()[0] == str(pwd.getpwnam("nobody").pw_uid).encode()
    made = server.data_dir / "runs" / run.id / "workspace" / "made-here"
    assert made.stat().st_uid == pwd.getpwnam("nobody").pw_uid


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another user needs root")
def test_a_run_as_program_cannot_make_the_supervisor_write_through_its_workspace(
    start_server, write_job, jobs_dir, tmp_path
) -> None:
    """The workspace is the program's; the supervisor, root, writes `params.json` into it at
    every attempt. An attempt that leaves a link in that file's place must not get the next
    attempt's params written into whatever it points at (a root-owned file)."""
    target = tmp_path / "roots-file"
    target.write_text("root's own\n")
    target.chmod(0o644)
    (tmp_path).chmod(0o755)
    script = (
        f"if [ -e second ]; then cat params.json; exit 0; fi; touch second; "
        f"rm -f params.json; ln -s {target} params.json; ln -s {tmp_path} out; exit 3"
    )
    write_job("relinks", f'command = ["sh", "-c", {script!r}]\nrun_as = "nobody"\n'
              'max_attempts = 2\nretry_on = [3]\n[backoff]\nbase_s = 0\n')  # fmt: skip
    server = start_server(jobs_dir)
    run, log = finish(server, "relinks")
    assert run.state is RunState.SUCCEEDED, log
    assert run.attempt == 2
    assert target.read_text() == "root's own\n"  # not truncated, not written to
    # the workspace handed over again (chowned to the user) without following its links
    assert target.stat().st_uid == 0
    assert tmp_path.stat().st_uid == 0
    params = server.data_dir / "runs" / run.id / "workspace" / "params.json"
    assert not params.is_symlink()
    assert log.strip().endswith(b"{}")  # the second attempt read its own params


HOST_CPU_S = 1000  # the server's (and so its supervisor's) hard RLIMIT_CPU in the test below
LOWERED_CPU = [
    "-c",
    "import resource, runpy, sys\n"
    f"resource.setrlimit(resource.RLIMIT_CPU, ({HOST_CPU_S}, {HOST_CPU_S}))\n"
    "sys.argv[0] = 'runyard'\n"
    "runpy.run_module('runyard', run_name='__main__')\n",
]


def test_a_limit_over_the_hosts_hard_limit_fails_its_run_saying_so(
    start_server, write_job, jobs_dir
) -> None:
    """A limit the program may not have (over the hard limit its supervisor runs under, which
    it cannot raise: not root, or root become another user) failed inside the child, and the
    run said only "SubprocessError: Exception occurred in preexec_fn". Then every run failed
    saying why; now the job's load does (jobs/run_needs.py), and its runs are refused."""
    user = 'run_as = "nobody"\n' if os.geteuid() == 0 else ""  # root could raise it itself
    write_job("over", f'command = ["true"]\n{user}[limits]\ncpu_s = {HOST_CPU_S * 5}\n')
    # within the hard limit, though its 5 s of grace are not: the grace is what the host allows
    write_job("within", f'command = ["true"]\n{user}[limits]\ncpu_s = {HOST_CPU_S - 2}\n')
    server = start_server(jobs_dir, entry=LOWERED_CPU)
    errors = web.get(f"{server.url}/v1/jobs", timeout=30).json()["errors"]
    assert (
        f"limits.cpu_s ({HOST_CPU_S * 5}) is over this host's hard RLIMIT_CPU ({HOST_CPU_S})"
        in errors["over.toml"]
    ), errors
    refused = web.post(f"{server.url}/v1/runs", json={"job": "over"}, timeout=30)
    assert refused.status_code in (404, 409) and "over" in refused.json()["detail"]
    assert finish(server, "within")[0].state is RunState.SUCCEEDED


def test_workspace_usage_is_reported(start_server) -> None:
    server = start_server()
    with server.client() as c:
        run = server.wait_run(c, c.submit("simulate", {"ticks": 2000}).id)
        listing = c.artifacts(run.id)
    assert listing.workspace_bytes >= sum(a.size for a in listing.artifacts) > 0
