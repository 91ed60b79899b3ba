"""A job's [sandbox] table at load: what the server's policy and the host allow, and the
command line the supervisor builds from it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runyard.execution import sandbox
from runyard.execution.protocol import BadRequestError, SpawnRequest
from runyard.jobs import JobRegistry
from runyard.jobs.sandbox import Sandbox, SandboxPolicy
from runyard.jobs.spec import LoadError, load_job

PLAIN = 'command = ["true"]\n'


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_no_table_is_no_sandbox_unless_the_server_requires_one(tmp_path: Path) -> None:
    path = write(tmp_path, "plain", PLAIN)
    assert load_job(path).spec.sandbox is None
    required = load_job(path, sandbox=SandboxPolicy(required=True)).spec.sandbox
    assert required == Sandbox()
    assert required.network == "none"
    assert required.writable == ["workspace", "tmp"]
    # the run's stored snapshot says it is sandboxed: a queued run runs as it was submitted
    snapshot = load_job(path, sandbox=SandboxPolicy(required=True)).snapshot
    assert snapshot["sandbox"]["network"] == "none"


def test_a_host_without_bwrap_cannot_load_a_sandboxed_job(tmp_path: Path) -> None:
    path = write(tmp_path, "boxed", PLAIN + "[sandbox]\n")
    with pytest.raises(LoadError, match="needs bubblewrap"):
        load_job(path, sandbox=SandboxPolicy(which="no-such-bwrap-here"))
    with pytest.raises(LoadError, match="needs bubblewrap"):
        load_job(write(tmp_path, "p", PLAIN), sandbox=SandboxPolicy(required=True, which="nope"))


def test_the_registry_looks_again_at_a_job_the_host_could_not_sandbox(tmp_path: Path) -> None:
    write(tmp_path, "boxed", PLAIN + f'[sandbox]\nro = ["{tmp_path / "models"}"]\n')
    registry = JobRegistry(tmp_path, refresh_s=0)
    assert "does not exist" in registry.scan().errors["boxed.toml"]
    (tmp_path / "models").mkdir()  # the job file is unchanged: only the host changed
    assert "boxed" in registry.scan().jobs


@pytest.mark.parametrize(
    ("binds", "why"),
    [
        ('ro = ["relative/path"]', "must be an absolute path"),
        ('rw = ["/usr/../etc"]', "plain path"),
        ('rw = ["/usr//lib"]', "plain path"),
        ('ro = ["/"]', "plain path"),
        ('network = "bridge"', "sandbox.network"),
        ('writable = ["home"]', "sandbox.writable"),
        ('mounts = ["/x"]', "Extra inputs are not permitted"),
    ],
)
def test_bad_tables_are_load_errors(tmp_path: Path, binds: str, why: str) -> None:
    with pytest.raises(LoadError, match=why):
        load_job(write(tmp_path, "bad", PLAIN + f"[sandbox]\n{binds}\n"))


def test_binds_never_reach_runyards_own_directories(tmp_path: Path) -> None:
    data = tmp_path / "srv" / "data"
    (data / "runs").mkdir(parents=True)
    (tmp_path / "link").symlink_to(data / "runs")
    policy = SandboxPolicy(forbidden=(data,))
    for bind in (data, data / "runs", tmp_path / "srv", tmp_path / "link"):
        path = write(tmp_path, "b", PLAIN + f'[sandbox]\nrw = ["{bind}"]\n')
        with pytest.raises(LoadError, match="is, holds or is inside runyard's"):
            load_job(path, sandbox=policy)
    assert load_job(write(tmp_path, "ok", PLAIN + '[sandbox]\nro = ["/usr"]\n'), sandbox=policy)


def test_a_sandboxed_slurm_job_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="Slurm executor runs no sandbox"):
        load_job(write(tmp_path, "s", PLAIN + 'executor = "slurm"\n[sandbox]\n'))
    path = write(tmp_path, "s", PLAIN + 'executor = "slurm"\n')
    with pytest.raises(LoadError, match="requires a sandbox"):
        load_job(path, sandbox=SandboxPolicy(required=True))


def test_the_spawn_request_checks_its_sandbox() -> None:
    base = {"key": "R.1", "argv": ["true"], "cwd": "/w", "env": {}, "log": "/l", "exit": "/e"}
    box = {"network": "none", "ro": [], "rw": [], "writable": ["workspace"], "hide": ["/d"]}
    assert SpawnRequest.parse({**base, "sandbox": box}).sandbox == box
    for bad in (
        "yes",
        {**box, "network": "bridge"},
        {**box, "ro": ["relative"]},
        {**box, "hide": [1]},
        {**box, "writable": ["/etc"]},
    ):
        with pytest.raises(BadRequestError):
            SpawnRequest.parse({**base, "sandbox": bad})


def test_exit_statuses_read_back_as_the_programs() -> None:
    assert sandbox.exit_status(0) == (0, None)
    assert sandbox.exit_status(7) == (7, None)
    assert sandbox.exit_status(128) == (128, None)
    assert sandbox.exit_status(137) == (None, 9)  # the program SIGKILLed inside
    assert sandbox.exit_status(143) == (None, 15)
    assert sandbox.exit_status(192) == (None, 64)
    assert sandbox.exit_status(193) == (193, None)
    assert sandbox.exit_status(-9) == (None, 9)  # bwrap itself SIGKILLed


def test_the_command_line_hides_before_it_binds_and_closes_nothing_it_did_not_open(
    tmp_path: Path,
) -> None:
    workspace = tmp_path / "data" / "runs" / "R" / "workspace"
    (workspace / "inputs").mkdir(parents=True)
    progress = tmp_path / "data" / "runs" / "R" / "attempt-1.progress.jsonl"
    progress.touch()
    box = {"network": "none", "ro": ["/usr"], "rw": [], "writable": ["workspace"],
           "hide": [str(tmp_path / "data"), str(tmp_path / "nothing")]}  # fmt: skip
    argv, fds = sandbox.argv(box, ["prog", "x"], str(workspace), str(progress), 99)
    try:
        line = " ".join(argv)
        assert "--unshare-all" in argv
        assert "--share-net" not in argv
        assert line.index(f"--tmpfs {tmp_path / 'data'}") < line.index("--bind-fd")
        assert str(tmp_path / "nothing") not in line  # not there: nothing to hide
        assert f"--remount-ro {tmp_path / 'data'}" in line
        assert "--remount-ro /tmp" in line  # tmp not writable
        assert line.endswith("--info-fd 99 -- prog x")
        assert len(fds) == 3  # workspace, inputs (read-only), progress
        assert f"--ro-bind-fd {fds[1]} {workspace / 'inputs'}" in line
    finally:
        for fd in fds:
            os.close(fd)
    user_argv, user_fds = sandbox.argv(
        {**box, "network": "host"}, ["prog"], str(workspace), None, 99, (65534, 65534)
    )
    for fd in user_fds:
        os.close(fd)
    assert "--unshare-all" not in user_argv
    assert "--unshare-net" not in user_argv  # network = "host"
    assert "--unshare-pid" in user_argv
    assert "--reuid=65534" in user_argv


def test_a_command_is_found_as_execvp_will_find_it_inside(tmp_path: Path) -> None:
    hidden_bin, open_bin, workspace = tmp_path / "home", tmp_path / "usr", tmp_path / "ws"
    for d in (hidden_bin, open_bin, workspace):
        d.mkdir()
    for d in (hidden_bin, open_bin):
        (d / "tool").write_text("#!/bin/sh\n")
        (d / "tool").chmod(0o755)
    (hidden_bin / "only-hidden").write_text("#!/bin/sh\n")
    (hidden_bin / "only-hidden").chmod(0o755)
    path = f"{hidden_bin}:{open_bin}"
    # the hidden one first on PATH: execvp inside goes on to the next, so it is found
    sandbox.findable("tool", path, [str(hidden_bin)], [str(workspace)])
    with pytest.raises(FileNotFoundError, match="hidden from the sandbox"):
        sandbox.findable("only-hidden", path, [str(hidden_bin)], [str(workspace)])
    # bound back (a bind, or the workspace itself), a hidden place is visible again
    sandbox.findable("only-hidden", path, [str(hidden_bin)], [str(workspace), str(hidden_bin)])
    with pytest.raises(FileNotFoundError, match="No such file"):
        sandbox.findable("no-such-tool", path, [], [str(workspace)])
    (workspace / "run.sh").write_text("#!/bin/sh\n")
    (workspace / "run.sh").chmod(0o755)
    sandbox.findable("./run.sh", path, [str(tmp_path)], [str(workspace)])
