"""Security: every route demands its role, bad input is refused without a state change, and
the server's secrets never reach a program."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from runyard.auth import Role, create_token
from tests import web
from tests.auth_matrix import OPENAI_ROUTES, matrix, refusal_detail
from tests.support import wait_for

pytestmark = pytest.mark.e2e

PUBLIC = {"/health/live", "/health/ready", "/health", "/metrics", "/openapi.json", "/docs",
          "/docs/oauth2-redirect", "/redoc"}  # fmt: skip


@pytest.fixture
def secured(start_server, tmp_path: Path):
    tokens_file = tmp_path / "tokens.toml"
    tokens = {role: create_token(tokens_file, role.name.lower(), role) for role in Role}
    server = start_server(env={"RUNYARD_TOKENS_FILE": str(tokens_file)})
    admin = {"Authorization": f"Bearer {tokens[Role.ADMIN]}"}
    run = web.post(f"{server.url}/v1/runs", json={"job": "true"}, headers=admin).json()
    with server.client() as c:
        c.http.headers.update(admin)
        server.wait_run(c, run["id"])
    return server, tokens, run["id"]


def test_every_route_refuses_missing_wrong_and_weak_tokens(secured) -> None:
    server, tokens, run_id = secured
    routes = matrix(run_id)
    templates = set(web.get(f"{server.url}/openapi.json").json()["paths"])
    covered = {"/v1/jobs/{name}", "/v1/runs/{run_id}", "/v1/runs/{run_id}/logs",
               "/v1/runs/{run_id}/logs/stream", "/v1/runs/{run_id}/events",
               "/v1/runs/{run_id}/artifacts", "/v1/runs/{run_id}/artifacts/{path}",
               "/v1/runs/{run_id}/cancel", "/v1/batches", "/v1/batches/{batch_id}",
               "/v1/batches/{batch_id}/cancel", "/v1/schedules", "/v1/schedules/{schedule_id}",
               "/v1/status", "/v1/jobs", "/v1/runs", "/v1/me", "/v1/events", "/v1/uploads",
               "/v1/uploads/{upload_id}", "/v1/uploads/{upload_id}/content",
               *OPENAI_ROUTES}  # fmt: skip
    assert templates - PUBLIC - covered == set()  # a new route must join the matrix
    with web.Client(base_url=server.url, timeout=30) as http:
        for method, path, needed, body in routes:
            resp = http.request(method, path, json=body)
            assert resp.status_code == 401, (method, path)
            assert resp.headers["www-authenticate"].startswith("Bearer")
            wrong = http.request(method, path, json=body, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401, (method, path)
            for role in Role:
                headers = {"Authorization": f"Bearer {tokens[role]}"}
                # streamed, and closed unread when allowed: /v1/events never ends by itself
                with http.stream(method, path, json=body, headers=headers) as resp:
                    if role < needed:
                        assert resp.status_code == 403, (method, path, role)
                        assert needed.name.lower() in refusal_detail(resp.read())
                    else:
                        assert resp.status_code not in (401, 403), (method, path, role)
        for path in ("/health/live", "/health/ready", "/health", "/metrics"):
            assert http.get(path).status_code == 200


def test_websocket_needs_a_token(secured) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    server, tokens, run_id = secured
    url = f"ws://127.0.0.1:{server.port}/v1/runs/{run_id}/ws"
    with pytest.raises(InvalidStatus) as info:
        connect(url)
    assert info.value.response.status_code == 401  # as over HTTP: the problem, not a bare 403
    assert json.loads(info.value.response.body)["status"] == 401
    with connect(url, additional_headers={"Authorization": f"Bearer {tokens[Role.READ]}"}) as ws:
        assert "state" in ws.recv()
    # refused as it should be, and no fault of the server's (uvicorn logged one at `error`)
    assert "without completing handshake" not in server.log_path.read_text()


def test_oversize_body_is_refused_before_it_is_read(start_server) -> None:
    server = start_server()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(
            b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 104857600\r\n\r\n"
        )  # 100 MB announced, not one byte sent: the answer cannot depend on reading it
        answer = b""
        while chunk := s.recv(65536):  # the server closes after answering
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"max_body_kb" in answer
    assert web.get(f"{server.url}/v1/runs").json()["runs"] == []


def test_deep_huge_and_oversized_input_changes_nothing(start_server) -> None:
    server = start_server()
    url = f"{server.url}/v1/runs"
    deep = b'{"job":"simulate","params":{"x":' + b"[" * 50_000 + b"]" * 50_000 + b"}}"
    assert web.post(
        url, content=deep, headers={"content-type": "application/json"}
    ).status_code in (400, 413, 422)
    long_task = web.post(url, json={"job": "agent", "params": {"task": "x" * 5000}})
    assert long_task.status_code == 422
    assert "params.task" in long_task.json()["detail"]
    many_labels = web.post(url, json={"job": "true", "labels": {f"k{i}": "v" for i in range(100)}})
    assert many_labels.status_code == 422
    assert "labels" in many_labels.json()["detail"]
    grid = {"seed": list(range(1000)), "ticks": list(range(1, 1001))}  # a million runs
    sweep = web.post(f"{server.url}/v1/batches", json={"job": "simulate", "sweep": grid})
    assert sweep.status_code == 422
    assert "max_batch" in sweep.json()["detail"]
    assert web.get(url).json()["runs"] == []


def test_server_environment_never_reaches_a_program(start_server, write_job, jobs_dir) -> None:
    write_job("envdump", 'command = ["env"]\n[env]\nJOB_SETTING = "visible"\n')
    server = start_server(jobs_dir, env={"RUNYARD_TEST_SECRET": "s3cr3t-value",
                                         "AWS_SECRET_ACCESS_KEY": "aws-s3cr3t"})  # fmt: skip
    with server.client() as c:
        run = c.submit("envdump")
        server.wait_run(c, run.id)
        dumped = c.logs(run.id)[0].decode()
    assert "s3cr3t" not in dumped
    assert "RUNYARD_TEST_SECRET" not in dumped
    assert "JOB_SETTING=visible" in dumped
    assert f"RUNYARD_RUN_ID={run.id}" in dumped
    names = {line.split("=", 1)[0] for line in dumped.splitlines()}
    assert names <= {"PATH", "HOME", "LANG", "TZ", "JOB_SETTING", "PWD", "SHLVL", "_"} | {
        n for n in names if n.startswith("RUNYARD_")
    }


def test_me_names_the_token_and_its_role(secured) -> None:
    server, tokens, _ = secured
    for role in Role:
        got = web.get(f"{server.url}/v1/me", headers={"Authorization": f"Bearer {tokens[role]}"})
        assert got.json() == {"name": role.name.lower(), "role": role.name.lower(), "auth": True}


def test_public_health_names_no_schedule(secured) -> None:
    """/health is public (probes, load balancers); reading schedules needs the read role. It
    listed every schedule's id, job and last run to anyone."""
    server, tokens, _ = secured
    submit = {"Authorization": f"Bearer {tokens[Role.SUBMIT]}"}
    made = web.post(f"{server.url}/v1/schedules", headers=submit,
                    json={"job": "true", "interval_s": 3600, "paused": True})  # fmt: skip
    assert made.status_code == 201, made.text
    read = {"Authorization": f"Bearer {tokens[Role.READ]}"}

    def listed() -> list[str]:
        seen = web.get(f"{server.url}/health", headers=read).json()["scheduler"]["schedules"]
        return [s["id"] for s in seen]

    wait_for(lambda: listed() == [made.json()["id"]], what="the schedule in the snapshot")
    for header in ({}, {"Authorization": "Bearer nonsense"}):
        public = web.get(f"{server.url}/health", headers=header).json()["scheduler"]
        assert "schedules" not in public
        assert made.json()["id"] not in json.dumps(public)
        assert public["status"] == "running"
