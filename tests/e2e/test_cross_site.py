"""A server without tokens answers this machine's clients, not the pages its browsers show (a
probe): a form's multipart submit, a cancel, an upload and a WebSocket from another origin were
all taken, and a page whose name was rebound to 127.0.0.1 read everything. Refused now
(api/middleware/cross_site.py), naming the header; with tokens none of it applies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from runyard.auth import Role, create_token
from tests import web
from tests.support import ServerProcess, wait_for

pytestmark = pytest.mark.e2e
EVIL = {"Origin": "https://evil.example"}


@pytest.fixture
def server(start_server, write_job, jobs_dir: Path) -> ServerProcess:
    write_job("long", 'command = ["sleep", "300"]\nkill_grace_s = 0\n')
    write_job("echo", 'command = ["echo", "hi"]\n')
    return start_server(jobs_dir)


def refused(resp: web.Response, header: str) -> None:  # type: ignore[name-defined]
    assert resp.status_code == 403, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["field"] == f"header.{header}"


def test_a_page_on_another_site_changes_nothing(server: ServerProcess) -> None:
    base = server.url
    form = {"run": json.dumps({"job": "echo"})}
    refused(web.post(f"{base}/v1/runs", data=form, files={"x": ("x", b"")}, headers=EVIL),
            "Origin")  # fmt: skip
    refused(web.post(f"{base}/v1/runs", data=form, files={"x": ("x", b"")},
                     headers={"Origin": "null"}), "Origin")  # fmt: skip
    for odd in ("http://[::1", "http://[zz]:1", "x" * 8000):  # no URL: refused, never a 500
        refused(web.post(f"{base}/v1/runs", json={"job": "echo"}, headers={"Origin": odd}),
                "Origin")  # fmt: skip
    upload = web.post(
        f"{base}/v1/uploads?name=x.txt",
        content=b"csrf",
        headers={"Content-Type": "text/plain", "Sec-Fetch-Site": "cross-site"},
    )
    refused(upload, "Sec-Fetch-Site")  # fmt: skip
    assert web.get(f"{base}/v1/runs").json()["runs"] == []  # nothing was taken
    assert not [p for p in (server.data_dir / "uploads").glob("*") if p.is_file()]

    long = web.post(f"{base}/v1/runs", json={"job": "long"}).json()["id"]  # no Origin: a client
    wait_for(lambda: web.get(f"{base}/v1/runs/{long}").json()["state"] == "running")
    refused(web.post(f"{base}/v1/runs/{long}/cancel", headers=EVIL), "Origin")
    assert web.get(f"{base}/v1/runs/{long}").json()["cancel_requested"] is False
    same = {"Origin": base}  # the dashboard: this origin
    assert web.post(f"{base}/v1/runs/{long}/cancel", headers=same).status_code == 202
    assert web.get(f"{base}/v1/runs", headers=EVIL).status_code == 200  # a read sends nothing

    ws = base.replace("http://", "ws://") + f"/v1/runs/{long}/ws"
    with pytest.raises(InvalidStatus) as info:
        connect(ws, origin="https://evil.example")  # type: ignore[arg-type]
    assert info.value.response.status_code == 403
    assert json.loads(info.value.response.body)["field"] == "header.Origin"
    with connect(ws, origin=base) as same_origin:  # type: ignore[arg-type]
        assert json.loads(same_origin.recv(timeout=10))["seq"] >= 1


def test_a_name_rebound_to_this_machine_reads_nothing_in_a_browser(server: ServerProcess) -> None:
    """A probe: a page whose name was rebound to 127.0.0.1 is the server's origin to the
    browser, and read a run's log (and could change anything). A browser says so
    (`Sec-Fetch-Site` on every request): it must name this machine."""
    port = server.url.rsplit(":", 1)[1]
    run = web.post(f"{server.url}/v1/runs", json={"job": "echo"}).json()["id"]
    logs = f"{server.url}/v1/runs/{run}/logs"
    browser = {"Sec-Fetch-Site": "same-origin", "Host": f"rebound.evil.example:{port}"}
    refused(web.get(logs, headers=browser), "Host")
    refused(web.get(f"{server.url}/health", headers=browser), "Host")
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost", f"[::1]:{port}"):
        seen = web.get(logs, headers={"Sec-Fetch-Site": "same-origin", "Host": host})
        assert seen.status_code == 200, (host, seen.text)
    client = web.get(logs, headers={"Host": f"any.name.example:{port}"})  # not a browser
    assert client.status_code == 200, client.text


def test_with_tokens_a_token_is_the_fence(
    start_server, write_job, jobs_dir: Path, tmp_path
) -> None:
    write_job("echo", 'command = ["echo", "hi"]\n')
    tokens = tmp_path / "tokens.toml"
    token = create_token(tokens, "ci", Role.SUBMIT)
    server = start_server(jobs_dir, env={"RUNYARD_TOKENS_FILE": str(tokens)})
    auth = {"Authorization": f"Bearer {token}"}
    sent = web.post(f"{server.url}/v1/runs", json={"job": "echo"}, headers={**auth, **EVIL})
    assert sent.status_code == 202, sent.text  # a page cannot attach the token by itself
    alone = web.post(f"{server.url}/v1/runs", json={"job": "echo"}, headers=EVIL)
    assert alone.status_code == 401
