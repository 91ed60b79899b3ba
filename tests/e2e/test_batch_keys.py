"""A batch sent again under its Idempotency-Key is made once. The key was refused (422), and
before that ignored: a sweep retried after a timeout was made twice, every run of it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from runyard.client import APIError, Client
from tests import web

pytestmark = pytest.mark.e2e

SWEEP = {"job": "sleeper", "sweep": {"seconds": [0, 0.01, 0.02]}}


def batch_runs(http: web.Client, batch_id: str) -> list[str]:
    runs = http.get("/v1/runs", params={"batch": batch_id, "limit": 500}).json()["runs"]
    return [r["id"] for r in runs]


def test_a_batch_sent_again_under_its_key_is_answered_not_made_again(start_server) -> None:
    server = start_server()
    with web.Client(base_url=server.url, timeout=30) as http:
        first = http.post("/v1/batches", json=SWEEP, headers={"Idempotency-Key": "sweep-1"})
        assert first.status_code == 202, first.text
        assert "idempotent-replayed" not in first.headers
        made = first.json()
        assert made["idempotency_key"] == "sweep-1" and made["size"] == 3
        again = http.post("/v1/batches", json=SWEEP, headers={"Idempotency-Key": "sweep-1"})
        assert again.status_code == 202, again.text
        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["location"] == f"/v1/batches/{made['id']}"
        assert again.json()["id"] == made["id"]
        assert sum(again.json()["counts"].values()) == 3  # its runs now, whatever their state
        # the job's priority given as it is (0): the same batch asked again
        explicit = http.post(
            "/v1/batches", json=dict(SWEEP, priority=0), headers={"Idempotency-Key": "sweep-1"}
        )
        assert explicit.status_code == 202, explicit.text
        assert explicit.json()["id"] == made["id"]
        higher = dict(SWEEP, priority=1)
        assert (
            http.post(
                "/v1/batches", json=higher, headers={"Idempotency-Key": "sweep-1"}
            ).status_code
            == 409
        )
        other = dict(SWEEP, sweep={"seconds": [0, 0.01]})
        refused = http.post("/v1/batches", json=other, headers={"Idempotency-Key": "sweep-1"})
        assert refused.status_code == 409, refused.text
        assert refused.json()["batch_id"] == made["id"]
        twice = http.post(
            "/v1/batches", json=SWEEP,
            headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
        )  # fmt: skip
        assert twice.status_code == 422 and twice.json()["field"] == "header.Idempotency-Key"
        assert [b["id"] for b in http.get("/v1/batches").json()["batches"]] == [made["id"]]
        assert len(batch_runs(http, made["id"])) == 3
        assert len(http.get("/v1/runs", params={"limit": 500}).json()["runs"]) == 3


def test_a_batch_sent_at_once_from_many_clients_under_one_key_is_made_once(start_server) -> None:
    server = start_server()
    body = {"job": "sleeper", "params": {"seconds": 0}, "iterations": 50}

    def send(_: int) -> tuple[int, str]:
        with web.Client(base_url=server.url, timeout=60) as http:
            resp = http.post("/v1/batches", json=body, headers={"Idempotency-Key": "race"})
            return resp.status_code, resp.json()["id"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(16)))
    assert {status for status, _ in answers} == {202}
    (batch_id,) = {batch for _, batch in answers}
    with web.Client(base_url=server.url, timeout=30) as http:
        assert len(http.get("/v1/runs", params={"limit": 500}).json()["runs"]) == 50
        assert len(batch_runs(http, batch_id)) == 50


def test_the_sdk_and_the_cli_send_the_key_and_it_outlives_a_restart(start_server) -> None:
    import subprocess
    import sys

    server = start_server()
    with Client(server.url, verify=web.TLS) as client:
        made = client.batch("sleeper", {"seconds": 0}, iterations=2, idempotency_key="sdk")
        again = client.batch("sleeper", {"seconds": 0}, iterations=2, idempotency_key="sdk")
        assert (again.id, again.idempotency_key, again.size) == (made.id, "sdk", 2)
        with pytest.raises(APIError) as refused:
            client.batch("sleeper", {"seconds": 1}, iterations=2, idempotency_key="sdk")
        assert refused.value.status == 409
    data_dir = server.data_dir
    server.stop()
    server = start_server(data_dir=data_dir)
    cli = [sys.executable, "-m", "runyard", "batch", "sleeper", "-p", "seconds=0",
           "--iterations", "2", "--idempotency-key", "sdk", "--server", server.url]  # fmt: skip
    done = subprocess.run(cli, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == made.id  # the batch made before the restart
    with web.Client(base_url=server.url, timeout=30) as http:
        assert len(http.get("/v1/runs", params={"limit": 500}).json()["runs"]) == 2
