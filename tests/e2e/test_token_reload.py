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


def _table(path: Path) -> None:
    path.write_text("[token]\nrole = 'admin'\nsha256 = '00'\n")  # not [[token]]: a traceback


def _scalar(path: Path) -> None:
    path.write_text("token = [1]\n")


def _shown_name(path: Path) -> None:
    # a name `token create` refuses: it is shown in logs and /v1/me, RLO and newline included
    path.write_text(f"[[token]]\nname = 'x\\u202e\\nnext'\nrole = 'read'\nsha256 = '{'0' * 64}'\n")


DAMAGES = [_deep, _fifo, _bad_role, _table, _scalar, _shown_name]


@pytest.mark.parametrize("damage", DAMAGES, ids=["deep", "fifo", "role", "table", "scalar", "name"])
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
        f"runyard: refusing to start: {path}: " in done.stderr
    ), done.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("damage", "reason"),
    [(_deep, b"nested deeper than"), (_table, b"a list of tables"), (_scalar, b"a table")],
    ids=["deep", "table", "scalar"],
)
def test_a_reload_of_a_tokens_file_that_cannot_be_used_keeps_the_tokens(
    start_server, tmp_path: Path, damage, reason: bytes
) -> None:
    """A probe: `[token]` or `token = [1]` raised a TypeError in the reload task (a traceback,
    no `tokens_not_reloaded` with its reason)."""
    path = tmp_path / "tokens.toml"
    token = create_token(path, "kept", Role.READ)
    server = start_server(env={"RUNYARD_TOKENS_FILE": str(path)})
    damage(path)
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: b"tokens_not_reloaded" in server.log_path.read_bytes(), what="a refusal")
    assert reason in server.log_path.read_bytes()
    assert b"Traceback" not in server.log_path.read_bytes()
    assert status_with(server.url, token) == 200
    assert server.proc.poll() is None


def test_an_empty_tokens_file_keeps_authentication_on(start_server, tmp_path: Path) -> None:
    """A probe: every token revoked, then a restart, and the server ran open to every local
    process (its own programs included). Given a tokens file, it asks for a token."""
    path = tmp_path / "tokens.toml"
    path.write_text("")
    server = start_server(env={"RUNYARD_TOKENS_FILE": str(path)})
    assert web.get(f"{server.url}/v1/jobs").status_code == 401
    token = create_token(path, "later", Role.READ)
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: status_with(server.url, token) == 200, what="the new token taken")


def test_an_authorization_header_given_twice_is_refused(start_server, tmp_path: Path) -> None:
    """A probe: the first of two was taken, where a proxy may check the last."""
    path = tmp_path / "tokens.toml"
    admin = create_token(path, "admin", Role.ADMIN)
    read = create_token(path, "read", Role.READ)
    server = start_server(env={"RUNYARD_TOKENS_FILE": str(path)})
    two = [("Authorization", f"Bearer {read}"), ("Authorization", f"Bearer {admin}")]
    with web.Client(timeout=30) as http:
        for method, route in (("GET", "/v1/me"), ("GET", "/v1/jobs"), ("POST", "/v1/runs")):
            got = http.request(method, f"{server.url}{route}", headers=two, json={"job": "true"})
            assert got.status_code == 401, (route, got.text)
            assert "more than once" in got.json()["detail"]
        one = http.get(f"{server.url}/v1/me", headers={"Authorization": f"Bearer {admin}"})
        assert one.json()["role"] == "admin"
