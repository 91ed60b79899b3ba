"""SIGHUP reloads the tokens file: a revoked token stops working without a restart, a new one
starts working, and a broken file keeps the tokens in force (issue 14, defect 17)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from runyard.auth import Role, create_token
from tests import web
from tests.support import free_port, wait_for

pytestmark = pytest.mark.e2e


def status_with(url: str, token: str) -> int:
    return web.get(f"{url}/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code


@pytest.mark.timeout(60)
def test_sighup_reloads_the_tokens_file(start_server, tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    old = create_token(path, "old", Role.READ)
    server = start_server(env={"RUNYARD_TOKENS_FILE": str(path)})
    assert status_with(server.url, old) == 200

    path.write_text("")  # revoke everything, then issue a new one
    new = create_token(path, "new", Role.READ)
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: status_with(server.url, old) == 401, what="the old token revoked")
    assert status_with(server.url, new) == 200
    assert server.proc.poll() is None  # SIGHUP did not end the server

    path.write_text("[[token]]\nrole = 'boss'\n")  # broken: the tokens in force stay
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: b"tokens_not_reloaded" in server.log_path.read_bytes(), what="a refusal")
    assert status_with(server.url, new) == 200
    assert server.proc.poll() is None


def _deep(path: Path) -> None:
    path.write_text("x = " + "[" * 3000 + "]" * 3000 + "\n")  # tomllib's stack, exhausted


def _fifo(path: Path) -> None:
    os.mkfifo(path)  # nobody ever writes it: a read would wait for good


def _bad_role(path: Path) -> None:
    path.write_text("[[token]]\nrole = 'boss'\nsha256 = '00'\n")


@pytest.mark.parametrize("damage", [_deep, _fifo, _bad_role], ids=["deep", "fifo", "role"])
def test_a_tokens_file_that_cannot_be_used_is_refused_in_one_line(
    write_job, jobs_dir: Path, tmp_path: Path, damage
) -> None:
    write_job("true", 'command = ["true"]\n')
    path = tmp_path / "tokens.toml"
    damage(path)
    done = subprocess.run(
        [sys.executable, "-m", "runyard", "serve", "--jobs", str(jobs_dir),
         "--data-dir", str(tmp_path / "d"), "--port", str(free_port())],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path),
             "RUNYARD_TOKENS_FILE": str(path)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert f"runyard: refusing to start: cannot read tokens file {path}" in done.stderr or (
        f"runyard: refusing to start: {path}: token 0" in done.stderr
    ), done.stderr


@pytest.mark.timeout(60)
def test_a_reload_of_a_tokens_file_nested_too_deep_keeps_the_tokens(
    start_server, tmp_path: Path
) -> None:
    path = tmp_path / "tokens.toml"
    token = create_token(path, "kept", Role.READ)
    server = start_server(env={"RUNYARD_TOKENS_FILE": str(path)})
    _deep(path)
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: b"tokens_not_reloaded" in server.log_path.read_bytes(), what="a refusal")
    assert b"nested deeper than" in server.log_path.read_bytes()
    assert status_with(server.url, token) == 200
    assert server.proc.poll() is None
