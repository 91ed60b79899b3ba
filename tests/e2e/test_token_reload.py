"""SIGHUP reloads the tokens file: a revoked token stops working without a restart, a new one
starts working, and a broken file keeps the tokens in force (issue 14, defect 17)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from runyard.auth import Role, create_token
from tests import web
from tests.support import wait_for

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
