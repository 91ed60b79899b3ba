"""A run's file input in a cluster (issue 18): uploaded to one server, the run claimed by
another, which fetches the upload from the first (a signed relay claim with the read role)
before the program starts, and checks its bytes against the upload's id."""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg
import pytest

from runyard.auth import Role, create_token
from tests import web
from tests.e2e.test_client_hostile import hostile, json_answer
from tests.support import wait_for

pytestmark = pytest.mark.e2e
__all__ = ["hostile"]  # the fixture, used by name

SECRET = "another-cluster-secret-0123456789"  # noqa: S105  a test cluster's
BODY = b"part: bracket\nmass: 1.25 kg\n"


def test_a_run_claimed_by_another_server_fetches_its_input(
    start_server, write_job, jobs_dir: Path, database: str, tmp_path: Path
) -> None:
    write_job("hold", 'command = ["sleep", "300"]\n')
    write_job("read", 'command = ["cat", "{data}"]\n[params.data]\ntype = "file"\n')
    tokens = tmp_path / "tokens.toml"
    token = create_token(tokens, "submitter", Role.SUBMIT)
    auth = {"Authorization": f"Bearer {token}"}

    def member(name: str):
        # a lease long enough that a loaded machine never lets one lapse: a lapse is reaped
        # and retried (another attempt), which is not what this test is about
        env = {"RUNYARD_DATABASE_URL": database, "RUNYARD_SERVER_ID": name,
               "RUNYARD_LEASE_S": "10", "RUNYARD_TOKENS_FILE": str(tokens),
               "RUNYARD_CLUSTER_SECRET": SECRET}  # fmt: skip
        return start_server(jobs_dir, capacity=1, data_dir=tmp_path / name, env=env)

    a = member("a")
    hold = web.post(f"{a.url}/v1/runs", json={"job": "hold"}, headers=auth).json()
    wait_for(lambda: web.get(f"{a.url}/v1/runs/{hold['id']}", headers=auth).json()["state"]
             == "running", what="a's only slot to be taken")  # fmt: skip
    upload_id = web.put(f"{a.url}/v1/uploads", params={"name": "part.txt"}, content=BODY,
                          headers=auth).json()["id"]  # fmt: skip
    assert upload_id == hashlib.sha256(BODY).hexdigest()
    params = {"data": f"upload:{upload_id}/part.txt"}  # fetched by its id, staged by the name
    run = web.post(f"{a.url}/v1/runs", headers=auth, json={"job": "read", "params": params})
    run = run.json()
    assert run["state"] == "queued"
    assert not (tmp_path / "b" / "uploads" / upload_id).exists()

    b = member("b")  # the only free slot in the cluster: b claims the run
    wait_for(lambda: web.get(f"{b.url}/v1/runs/{run['id']}", headers=auth).json()["state"]
             == "succeeded", timeout=60, what="b to run it")  # fmt: skip
    with psycopg.connect(database) as conn:
        hosts = conn.execute("SELECT host FROM attempts WHERE run_id = %s", (run["id"],)).fetchall()
        ends = conn.execute(  # what ended an attempt before it, if there was one
            "SELECT data FROM run_events WHERE run_id = %s AND kind = 'state' ORDER BY seq",
            (run["id"],),
        ).fetchall()
    assert hosts == [("b",)], ends
    assert web.get(f"{b.url}/v1/runs/{run['id']}/logs", headers=auth).content == BODY
    fetched = tmp_path / "b" / "uploads" / upload_id
    assert hashlib.sha256(fetched.read_bytes()).hexdigest() == upload_id
    web.post(f"{a.url}/v1/runs/{hold['id']}/cancel", headers=auth)
    # a submit sent to another server than the upload (as a load balancer does) is accepted:
    # that server fetches the upload to check it
    other = web.put(f"{a.url}/v1/uploads", params={"name": "other.txt"}, content=b"other",
                      headers=auth).json()["id"]  # fmt: skip
    resp = web.post(f"{b.url}/v1/runs", headers=auth,
                      json={"job": "read", "params": {"data": f"upload:{other}"}})  # fmt: skip
    assert resp.status_code == 202, resp.text
    assert (tmp_path / "b" / "uploads" / other).is_file()
    nowhere = {"job": "read", "params": {"data": "upload:" + "0" * 64}}
    unknown = web.post(f"{b.url}/v1/runs", headers=auth, json=nowhere)
    assert unknown.status_code == 422
    assert "no upload" in unknown.json()["detail"]


def test_a_member_that_says_an_upload_is_too_big_is_passed_over(
    start_server, write_job, jobs_dir: Path, database: str, tmp_path: Path, hostile
) -> None:
    """A probe: a member (broken, or an impostor in the servers table) said every upload was
    10**15 bytes, and each fetch ended there: a 413 "over the limit" for a 23-byte file, and
    claimed runs re-queued again and again. The next member is asked all the same."""
    write_job("read", 'command = ["cat", "{data}"]\n[params.data]\ntype = "file"\n')
    env = {"RUNYARD_DATABASE_URL": database, "RUNYARD_LEASE_S": "10",
           "RUNYARD_CLUSTER_SECRET": SECRET}  # fmt: skip
    a = start_server(jobs_dir, data_dir=tmp_path / "a", env={**env, "RUNYARD_SERVER_ID": "a"})
    b = start_server(jobs_dir, data_dir=tmp_path / "b", env={**env, "RUNYARD_SERVER_ID": "b"})
    liar = hostile({"/v1/uploads/": json_answer({"size": 10**15, "name": "x"})})
    with psycopg.connect(database) as conn:  # asked first: live members are taken by id
        conn.execute(
            "INSERT INTO servers (id, url, token, capacity, started_at, heartbeat_at, "
            "lease_expires_at) VALUES ('0-liar', %s, 'liar-token', 1, 0, 0, 1e12)", (liar.url,)
        )  # fmt: skip
    upload_id = web.put(f"{a.url}/v1/uploads", params={"name": "part.txt"}, content=BODY).json()
    params = {"data": f"upload:{upload_id['id']}"}
    resp = web.post(f"{b.url}/v1/runs", json={"job": "read", "params": params})
    assert resp.status_code == 202, resp.text
    assert any(p.startswith("/v1/uploads/") for p in liar.asked), liar.asked
    assert (tmp_path / "b" / "uploads" / upload_id["id"]).is_file()


FLAKY = """command = ["sh", "-c", 'echo "attempt $RUNYARD_ATTEMPT here"; [ $RUNYARD_ATTEMPT != 1 ]']
max_attempts = 2
retry_on = [1]
backoff = { base_s = 4, jitter = 0 }
"""


def test_the_log_of_an_earlier_attempt_is_asked_of_the_server_that_ran_it(
    start_server, write_job, jobs_dir: Path, database: str, tmp_path: Path
) -> None:
    """A probe: the relay found a run's server by its latest attempt alone, so the log of an
    earlier one that ran elsewhere was answered by the latest's server: an empty 200, and a
    stream ending with the run's state as if that attempt had succeeded."""
    write_job("flaky", FLAKY)
    write_job("hold", 'command = ["sleep", "300"]\n')
    env = {"RUNYARD_DATABASE_URL": database, "RUNYARD_LEASE_S": "10",
           "RUNYARD_CLUSTER_SECRET": SECRET}  # fmt: skip

    def member(name: str):
        return start_server(jobs_dir, capacity=1, data_dir=tmp_path / name,
                            env={**env, "RUNYARD_SERVER_ID": name})  # fmt: skip

    a = member("a")
    run = web.post(f"{a.url}/v1/runs", json={"job": "flaky"}).json()["id"]
    url = f"{a.url}/v1/runs/{run}"
    wait_for(lambda: (r := web.get(url).json())["attempt"] == 1 and r["state"] == "queued",
             what="its first attempt failed, the retry backing off")  # fmt: skip
    hold = web.post(f"{a.url}/v1/runs", json={"job": "hold"}).json()["id"]  # a's slot, first
    b = member("b")
    wait_for(lambda: web.get(url).json()["state"] == "succeeded", timeout=60, what="retried")
    hosts = [x["host"] for x in web.get(url).json()["attempts"]]
    assert hosts == ["a", "b"], hosts
    first = web.get(f"{b.url}/v1/runs/{run}/logs", params={"attempt": 1})
    assert first.status_code == 200, first.text
    assert first.content == b"attempt 1 here\n"
    assert first.headers["x-runyard-served-by"] == "a"
    streamed = web.get(f"{b.url}/v1/runs/{run}/logs/stream", params={"attempt": 1}).text
    assert "attempt 1 here" in streamed and '"exit_code": 1' in streamed, streamed
    assert web.get(f"{a.url}/v1/runs/{run}/logs").content == b"attempt 2 here\n"
    web.post(f"{a.url}/v1/runs/{hold}/cancel")
