"""Sandboxed runs (bubblewrap, `[sandbox]`): what a program sees from inside, and supervision
unchanged — exit codes, signals, cancel, timeout, nothing left behind, re-adoption.

Each probe runs the same program sandboxed (`boxed`) and, where it shows the test would
notice a broken sandbox, unsandboxed (`open`): what the open run can do, the boxed one cannot.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from runyard.client import APIError, Client
from runyard.models import RunState
from runyard.schemas import RunView
from tests import web
from tests.support import REPO, processes_of, wait_for

pytestmark = pytest.mark.e2e

PY = 'command = ["python3", "-c", "{code}"]\n[params.code]\ntype = "str"\nmax_length = 8000\n'
JOBS = {
    "open": PY,
    "boxed": PY + "[sandbox]\n",
    "hostnet": PY + '[sandbox]\nnetwork = "host"\n',
    "sh": 'command = ["sh", "-c", "{script}"]\nkill_grace_s = 1\n'
    '[params.script]\ntype = "str"\nmax_length = 2000\n[sandbox]\n',
    "stubborn": 'command = ["sh", "-c", "trap \'echo got TERM, ignoring\' TERM; echo started; '
    'while true; do sleep 0.2; done"]\nkill_grace_s = 1\n[sandbox]\n',
    "slow": 'command = ["sh", "-c", "trap \'echo got TERM\' TERM; echo started; '
    'while true; do sleep 0.2; done"]\ntimeout_s = 0.5\nkill_grace_s = 0.5\n[sandbox]\n',
    "gate": 'command = ["sh", "-c", "echo waiting; while [ ! -e go ]; do sleep 0.05; done; '
    'echo released; exit 5"]\n[sandbox]\n',
    "nobody": 'command = ["sh", "-c", "id -u; echo mine > outputs/x; cat outputs/x"]\n'
    'run_as = "nobody"\n[sandbox]\n',
}

READ = """
import json, os
out = {}
for p in PATHS:
    try:
        if os.path.isdir(p):
            out[p] = sorted(os.listdir(p))
        else:
            with open(p, "rb") as f:
                out[p] = f.read(4096).decode("latin-1")
    except OSError as e:
        out[p] = type(e).__name__
print(json.dumps(out))
"""

WRITE = """
import json
out = {}
for p in PATHS:
    try:
        with open(p, "w") as f:
            f.write("x")
        out[p] = "written"
    except OSError as e:
        out[p] = type(e).__name__
print(json.dumps(out))
"""

CONNECT = """
import json, socket
out = {}
for port in PORTS:
    try:
        socket.create_connection(("127.0.0.1", port), 2).close()
        out[port] = "connected"
    except OSError as e:
        out[port] = type(e).__name__
print(json.dumps(out))
"""

PS = """
import json, subprocess
ps = subprocess.run(["ps", "-e", "-o", "pid=,comm="], capture_output=True, text=True).stdout
print(json.dumps([line.split(None, 1) for line in ps.splitlines()]))
"""


@pytest.fixture
def jobs(write_job, jobs_dir: Path) -> Path:
    for name, text in JOBS.items():
        write_job(name, text)
    return jobs_dir


def code(template: str, **values: object) -> str:
    return "".join(f"{k} = {v!r}\n" for k, v in values.items()) + template


def run_json(server, c: Client, job: str, program: str) -> object:
    done = server.wait_run(c, c.submit(job, {"code": program}).id)
    log = c.logs(done.id)[0]
    assert done.state is RunState.SUCCEEDED, log
    return json.loads(log.splitlines()[-1])


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on the host's loopback that accepts connections."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        yield srv.getsockname()[1]


def test_a_sandboxed_run_cannot_read_other_runs_the_server_or_its_places(
    start_server, jobs: Path
) -> None:
    server = start_server(jobs, env={"SANDBOX_TEST_SECRET": "s3cr3t-of-the-server"})
    with server.client() as c:
        victim = server.wait_run(c, c.submit("open", {"code": "open('secret', 'w').write('x')"}).id)
        secret = server.data_dir / "runs" / victim.id / "workspace" / "secret"
        assert secret.exists()
        paths = [
            str(secret),
            str(server.data_dir / "runyard.db"),
            str(server.data_dir / "runs"),
            str(jobs / "boxed.toml"),
            str(jobs),
            f"/proc/{server.proc.pid}/environ",
            "/root",
        ]
        program = code(READ, PATHS=paths)
        seen_open = run_json(server, c, "open", program)
        seen = run_json(server, c, "boxed", program)
    assert isinstance(seen_open, dict)
    assert isinstance(seen, dict)
    # what the same program reads unsandboxed, it cannot inside
    assert seen_open[str(secret)] == "x"
    assert "boxed.toml" in seen_open[str(jobs)]
    assert "s3cr3t-of-the-server" in seen_open[f"/proc/{server.proc.pid}/environ"]
    assert seen[str(secret)] == "FileNotFoundError"
    assert seen[str(server.data_dir / "runyard.db")] == "FileNotFoundError"
    # the runs directory holds only this run's own workspace (bound back over the hidden one)
    assert victim.id not in seen[str(server.data_dir / "runs")]
    assert seen[str(jobs / "boxed.toml")] == "FileNotFoundError"
    assert seen[str(jobs)] == []
    assert seen[f"/proc/{server.proc.pid}/environ"] == "FileNotFoundError"
    assert seen["/root"] == []
    assert "s3cr3t" not in json.dumps(seen)


def test_network_none_cannot_reach_the_host_and_host_can(
    start_server, jobs: Path, listener: int
) -> None:
    server = start_server(jobs)
    ports = [listener, 5432]  # a port of the test's own, and the machine's PostgreSQL
    with server.client() as c:
        none = run_json(server, c, "boxed", code(CONNECT, PORTS=ports))
        host = run_json(server, c, "hostnet", code(CONNECT, PORTS=ports))
    assert none == {str(listener): "ConnectionRefusedError", "5432": "ConnectionRefusedError"}
    assert host == {str(listener): "connected", "5432": "connected"}


def test_writes_outside_the_workspace_and_tmp_fail(start_server, jobs: Path) -> None:
    server = start_server(jobs)
    outside = [
        "/usr/sandbox-escape",
        "/etc/sandbox-escape",
        "/root/sandbox-escape",
        str(REPO / "sandbox-escape"),
        str(jobs / "sandbox-escape.toml"),
        str(server.data_dir / "sandbox-escape"),
    ]
    with server.client() as c:
        run = c.submit("boxed", {"code": code(WRITE, PATHS=[*outside, "/tmp/ok", "mine"])})
        done = server.wait_run(c, run.id)
        wrote = json.loads(c.logs(run.id)[0].splitlines()[-1])
    assert done.state is RunState.SUCCEEDED
    assert wrote["/tmp/ok"] == "written"
    assert wrote["mine"] == "written"
    assert (server.data_dir / "runs" / run.id / "workspace" / "mine").read_text() == "x"
    for path in outside:
        assert wrote[path] in {"OSError", "PermissionError", "FileNotFoundError"}, path
        assert not Path(path).exists(), path
    assert not Path("/tmp/ok").exists()  # a private /tmp


def test_ps_shows_only_the_runs_own_processes(start_server, jobs: Path) -> None:
    server = start_server(jobs)
    with server.client() as c:
        everyone = run_json(server, c, "open", PS)
        own = run_json(server, c, "boxed", PS)
    assert isinstance(everyone, list)
    assert isinstance(own, list)
    assert str(server.proc.pid) in {pid for pid, _ in everyone}
    # bwrap's init (pid 1), the program and the ps it started: nothing of the host
    assert own[0] == ["1", "bwrap"]
    assert {comm for _, comm in own} <= {"bwrap", "python3", "ps"}
    assert len(own) <= 3


def test_a_double_forked_setsid_child_is_gone_when_the_run_ends(start_server, jobs) -> None:
    server = start_server(jobs)
    script = "setsid sh -c 'sleep 300 & echo daemon $!'; sleep 0.2; echo parent done"
    with server.client() as c:
        done = server.wait_run(c, c.submit("sh", {"script": script}).id)
        assert b"parent done" in c.logs(done.id)[0]
    assert done.state is RunState.SUCCEEDED
    wait_for(lambda: processes_of(server.data_dir) == [], timeout=10, what="no process left")


def test_exit_codes_signals_and_peak_memory_read_as_unsandboxed(start_server, jobs) -> None:
    server = start_server(jobs)
    with server.client() as c:
        code7 = server.wait_run(c, c.submit("sh", {"script": "exit 7"}).id)
        killed = server.wait_run(c, c.submit("sh", {"script": "echo hi; kill -9 $$"}).id)
        hungry = server.wait_run(
            c,
            c.submit(
                "boxed", {"code": "b = bytearray(150 * 2**20); b[::4096] = b'x' * len(b[::4096])"}
            ).id,
        )
    assert (code7.state, code7.exit_code, code7.reason) == (RunState.FAILED, 7, "exit code 7")
    assert killed.state is RunState.FAILED
    assert killed.exit_code is None
    assert killed.reason == "killed by SIGKILL"
    (attempt,) = hungry.attempts or []
    assert attempt.peak_rss_kb is not None
    assert attempt.peak_rss_kb >= 150 * 1024  # the program's, not bwrap's few megabytes


@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_cancel_and_timeout_of_a_stubborn_sandboxed_program(start_server, jobs, how) -> None:
    server = start_server(jobs)
    job = "stubborn" if how == "cancel" else "slow"
    with server.client() as c:
        run = c.submit(job)
        wait_for(lambda: b"started" in c.logs(run.id)[0], what="program started")
        if how == "cancel":
            c.cancel(run.id)
        done = server.wait_run(c, run.id)
        log = c.logs(run.id)[0]
    assert done.state is (RunState.CANCELLED if how == "cancel" else RunState.TIMED_OUT)
    # the SIGTERM reached the program (bwrap stayed up through it), the SIGKILL ended it
    assert b"got TERM" in log
    assert "SIGKILL" in (done.reason or "")
    wait_for(lambda: processes_of(server.data_dir) == [], timeout=10, what="no process left")


def test_cancel_gives_a_sandboxed_program_its_grace(start_server, jobs) -> None:
    script = "trap 'echo cleaning up; exit 3' TERM; echo started; while true; do sleep 0.1; done"
    server = start_server(jobs)
    with server.client() as c:
        run = c.submit("sh", {"script": script})
        wait_for(lambda: b"started" in c.logs(run.id)[0], what="program started")
        c.cancel(run.id)
        done = server.wait_run(c, run.id)
        assert b"cleaning up" in c.logs(run.id)[0]
    assert done.state is RunState.CANCELLED
    assert done.exit_code == 3  # its own exit, within the grace: not bwrap's


def test_run_as_works_sandboxed(start_server, jobs) -> None:
    server = start_server(jobs)
    with server.client() as c:
        done = server.wait_run(c, c.submit("nobody").id)
        assert done.state is RunState.SUCCEEDED, c.logs(done.id)[0]
        assert c.logs(done.id)[0] == b"65534\nmine\n"


@pytest.mark.leaks_allowed("the first server is SIGKILLed")
def test_a_restarted_server_readopts_a_sandboxed_run_with_its_true_exit_code(
    start_server, jobs
) -> None:
    server = start_server(jobs)
    with server.client() as c:
        gate = c.submit("gate")
        wait_for(lambda: b"waiting" in c.logs(gate.id)[0], what="gate waiting")
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    # while the server is down, the sandboxed program sees `go` in its workspace and exits 5
    (server.data_dir / "runs" / gate.id / "workspace" / "go").touch()
    exit_file = server.data_dir / "runs" / gate.id / "attempt-1.exit.json"
    wait_for(exit_file.exists, what="gate exit file")
    server = start_server(jobs)
    with server.client() as c:
        done: RunView = server.wait_run(c, gate.id)
        assert c.logs(gate.id)[0] == b"waiting\nreleased\n"
    assert done.state is RunState.FAILED
    assert done.exit_code == 5
    assert len(done.attempts or []) == 1


def test_require_sandbox_sandboxes_every_job(start_server, write_job, jobs_dir) -> None:
    write_job("plain", PY)
    server = start_server(jobs_dir, env={"RUNYARD_REQUIRE_SANDBOX": "true"})
    with server.client() as c:
        own = run_json(server, c, "plain", PS)
        assert c.job("plain").sandbox == {
            "network": "none",
            "ro": [],
            "rw": [],
            "writable": ["workspace", "tmp"],
        }
    assert isinstance(own, list)
    assert own[0] == ["1", "bwrap"]


def test_a_sandbox_the_host_cannot_give_is_a_load_error(
    start_server, write_job, jobs_dir, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_job("missing", PY + '[sandbox]\nro = ["/no/such/dir"]\n')
    write_job("datadir", PY + f'[sandbox]\nrw = ["{data / "runs"}"]\n')
    write_job("parent", PY + f'[sandbox]\nro = ["{tmp_path}"]\n')
    write_job("relative", PY + '[sandbox]\nro = ["models"]\n')
    write_job("dotdot", PY + '[sandbox]\nro = ["/usr/../etc"]\n')
    write_job("net", PY + '[sandbox]\nnetwork = "bridge"\n')
    write_job("slurmy", 'executor = "slurm"\n' + PY + "[sandbox]\n")
    write_job("fine", PY + '[sandbox]\nro = ["/usr/share"]\n')
    server = start_server(jobs_dir, data_dir=data)
    with server.client() as c:
        listing = c.jobs()
        errors = listing.errors
        assert [j.name for j in listing.jobs] == ["fine"]
        with pytest.raises(APIError):
            c.submit("missing", {"code": "0"})
    assert "/no/such/dir does not exist" in errors["missing.toml"]
    assert "is, holds or is inside runyard's" in errors["datadir.toml"]
    assert "is, holds or is inside runyard's" in errors["parent.toml"]
    assert "must be an absolute path" in errors["relative.toml"]
    assert "plain path" in errors["dotdot.toml"]
    assert "sandbox.network" in errors["net.toml"]
    assert "Slurm executor runs no sandbox" in errors["slurmy.toml"]


def test_readiness_says_when_bwrap_stops_making_sandboxes(
    start_server, write_job, jobs_dir, tmp_path: Path
) -> None:
    real, broken, bin_dir = shutil.which("bwrap"), tmp_path / "broken", tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "bwrap"  # the real one, until the test breaks it
    fake.write_text(
        f'#!/bin/sh\nif [ -e {broken} ]; then echo "bwrap: broken by the test" >&2; exit 1; fi\n'
        f'exec {real} "$@"\n'
    )
    fake.chmod(0o755)
    write_job("boxed", PY + "[sandbox]\n")
    server = start_server(
        jobs_dir,
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "RUNYARD_SANDBOX_CHECK_S": "0.2"},
    )
    ready = f"{server.url}/health/ready"
    assert web.get(ready).status_code == 200
    broken.touch()
    wait_for(lambda: web.get(ready).status_code == 503, timeout=20, what="not ready")
    assert "broken by the test" in web.get(ready).json()["checks"]["sandbox"]
    broken.unlink()
    wait_for(lambda: web.get(ready).status_code == 200, timeout=20, what="ready again")


FILE_JOB = """
command = ["sh", "-c", '''
    cat "$0"
    chmod 644 "$0" 2>/dev/null; {{ echo tamper >> "$0"; }} 2>/dev/null || echo "input read-only"
    echo '{{"fraction": 0.5, "message": "half"}}' >> "$RUNYARD_PROGRESS_FILE"
    grep -c sha256 "$RUNYARD_PARAMS_FILE"
    echo made > "$RUNYARD_ARTIFACTS_DIR/made.txt"
''', "{data}"]
[params.data]
type = "file"
max_mb = 1
[sandbox]
"""


def test_runyard_paths_work_inside_and_file_inputs_stay_read_only(
    start_server, write_job, jobs_dir
) -> None:
    write_job("inputs", FILE_JOB)
    server = start_server(jobs_dir)
    resp = web.put(f"{server.url}/v1/uploads", params={"name": "t.csv"}, content=b"a,b\n")
    upload_id = resp.json()["id"]
    with server.client() as c:
        done = server.wait_run(c, c.submit("inputs", {"data": f"upload:{upload_id}"}).id)
        log = c.logs(done.id)[0]
        artifacts = [a.path for a in c.artifacts(done.id).artifacts]
    assert done.state is RunState.SUCCEEDED, log
    # the upload, as staged: root inside, yet neither chmod nor a write reaches it
    assert log == b"a,b\ninput read-only\n1\n"
    assert (server.data_dir / "uploads" / upload_id).read_bytes() == b"a,b\n"
    assert done.progress is not None
    assert done.progress["message"] == "half"
    assert "outputs/made.txt" in artifacts
