"""The relay between servers cannot be steered: only known routes with re-encoded parts are
forwarded, with the caller's own role signed for one request, and a client's forwarding
headers are nothing (issue 14, defect 6 and parts of 17)."""

from __future__ import annotations

import http.client
import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import httpx
import psycopg
import pytest

from runyard.auth import RELAY_HEADER, RELAY_VALIDITY_S, Role, create_token
from tests import web
from tests.support import ServerProcess, free_port, wait_for

pytestmark = pytest.mark.e2e

SECRET = "s3cret-of-the-cluster-0123456789"  # noqa: S105  a test cluster's
LINES = 5


@pytest.fixture
def relay_jobs(write_job, jobs_dir: Path) -> Path:
    program = (
        'mkdir -p "outputs/a b"; echo hello > "outputs/a b/c.txt"; '
        f"i=0; while [ $i -lt {LINES} ]; do i=$((i+1)); echo line $i; done"
    )
    write_job("art", f'command = ["sh", "-c", {program!r}]\nartifacts = ["outputs/**"]\n')
    return jobs_dir


@pytest.fixture
def tokens(tmp_path: Path) -> tuple[Path, dict[Role, str]]:
    path = tmp_path / "tokens.toml"
    return path, {role: create_token(path, role.name.lower(), role) for role in Role}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def cluster(start_server, relay_jobs, database, tmp_path, tokens):
    """c1 runs one job to its end (its files are on c1), then c2 joins."""
    path, toks = tokens

    def one(name: str) -> ServerProcess:
        env = {"RUNYARD_DATABASE_URL": database, "RUNYARD_SERVER_ID": name,
               "RUNYARD_TOKENS_FILE": str(path), "RUNYARD_CLUSTER_SECRET": SECRET}  # fmt: skip
        return start_server(relay_jobs, capacity=2, data_dir=tmp_path / name, env=env)

    c1 = one("c1")
    run = web.post(f"{c1.url}/v1/runs", json={"job": "art"}, headers=auth(toks[Role.SUBMIT]))
    run_id = run.json()["id"]
    wait_for(
        lambda: (
            web.get(f"{c1.url}/v1/runs/{run_id}", headers=auth(toks[Role.READ])).json()["state"]
            == "succeeded"
        ),
        what="the run to succeed on c1",
    )
    return c1, one("c2"), run_id, toks


def raw_get(server: ServerProcess, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """A request whose path goes out exactly as written (httpx would remove dot segments)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.timeout(90)
def test_the_relay_cannot_be_steered_by_paths_or_forged_headers(cluster) -> None:
    c1, c2, run_id, toks = cluster
    read = auth(toks[Role.READ])
    for tail in (
        "%2e%2e/%2e%2e/%2e%2e/%2e%2e/v1/status",  # the reported one
        "../../../../v1/status",
        "..%2f..%2f..%2f..%2fv1%2fstatus",
        "outputs/./../../../../v1/status",
        "outputs//x",
    ):
        status, body = raw_get(c2, f"/v1/runs/{run_id}/artifacts/{tail}", read)
        assert status in (403, 404), (tail, status, body)
        assert b"uptime" not in body and b"version" not in body, tail
    # the genuine artifact, with a space in a directory's name, comes through re-encoded
    got = web.get(f"{c2.url}/v1/runs/{run_id}/artifacts/outputs/a%20b/c.txt", headers=read)
    assert got.status_code == 200 and got.text == "hello\n"
    assert got.headers["x-runyard-served-by"] == "c1"

    forged = {
        "X-Runyard-Forwarded-By": "c1",
        RELAY_HEADER: f"v1 c1 c2 admin 1 {'0' * 32} mallory {'0' * 64}",
    }
    # a non-owner with forged headers still relays to the owner: the whole log, not an empty one
    got = web.get(f"{c2.url}/v1/runs/{run_id}/logs", headers={**read, **forged})
    assert got.status_code == 200
    assert got.text.splitlines() == [f"line {i}" for i in range(1, LINES + 1)]
    assert got.headers["x-runyard-served-by"] == "c1"
    assert got.headers.get_list("x-request-id") == [got.headers["x-request-id"]]  # once
    # a forged claim is no credential, and the cluster secret is not a bearer token any more
    forged[RELAY_HEADER] = forged[RELAY_HEADER].replace("c2", "c1")
    assert web.get(f"{c1.url}/v1/status", headers=forged).status_code == 401
    assert web.get(f"{c1.url}/v1/status", headers=auth(SECRET)).status_code == 401
    assert web.get(f"{c2.url}/v1/status", headers=read).status_code == 403


class Capture(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str, dict[str, str]]]] = []

    def do_GET(self) -> None:
        Capture.seen.append((self.command, self.path, dict(self.headers.items())))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def capture() -> Iterator[str]:
    Capture.seen = []
    port = free_port()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Capture)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.timeout(90)
def test_the_relay_carries_the_callers_role_signed_for_that_one_request(
    cluster, capture, database
) -> None:
    c1, c2, run_id, toks = cluster
    with psycopg.connect(database) as conn:  # c1's files, as far as c2 knows, are at `capture`
        conn.execute("UPDATE servers SET url = %s WHERE id = 'c1'", (capture,))
    got = web.get(
        f"{c2.url}/v1/runs/{run_id}/artifacts/outputs/a%20b/c.txt",
        headers={**auth(toks[Role.READ]), "X-Request-ID": "req-1", "Cookie": "x=1"},
    )
    assert got.status_code == 200 and got.text == "ok"
    assert got.headers.get_list("x-request-id") == ["req-1"]  # once, the caller's own
    ((method, path, headers),) = Capture.seen
    assert method == "GET" and path == f"/v1/runs/{run_id}/artifacts/outputs/a%20b/c.txt"
    lowered = {k.lower(): v for k, v in headers.items()}
    assert "authorization" not in lowered and "cookie" not in lowered
    claim = lowered[RELAY_HEADER].split(" ")
    assert claim[1:4] == ["c2", "c1", "read"]  # from c2 to c1, the caller's role, never more

    # The claim, taken to the real c1: good once for exactly that request, then never again.
    stolen = {RELAY_HEADER: lowered[RELAY_HEADER]}
    assert web.get(f"{c1.url}/v1/status", headers=stolen).status_code == 401
    assert web.delete(f"{c1.url}/v1/runs/{run_id}", headers=stolen).status_code == 401
    upgraded = {RELAY_HEADER: lowered[RELAY_HEADER].replace(" read ", " admin ")}
    assert web.get(f"{c1.url}{path}", headers=upgraded).status_code == 401
    first = web.get(f"{c1.url}{path}", headers=stolen)
    assert first.status_code == 200 and first.text == "hello\n"
    assert web.get(f"{c1.url}{path}", headers=stolen).status_code == 401  # replayed


@pytest.mark.timeout(120)
def test_a_claim_used_before_a_restart_is_refused_after_it(cluster, capture, database) -> None:
    # A probe: a claim c1 had accepted was accepted again after c1 restarted (4 s later,
    # within its 30 s): the nonces c1 saw were in the memory of the process that went.
    c1, c2, run_id, toks = cluster
    with psycopg.connect(database) as conn:  # c1's files, as far as c2 knows, are at `capture`
        conn.execute("UPDATE servers SET url = %s WHERE id = 'c1'", (capture,))
    path = f"/v1/runs/{run_id}/artifacts/outputs/a%20b/c.txt"
    assert web.get(f"{c2.url}{path}", headers=auth(toks[Role.READ])).status_code == 200
    ((_, _, headers),) = Capture.seen
    stolen = {RELAY_HEADER: {k.lower(): v for k, v in headers.items()}[RELAY_HEADER]}
    assert web.get(f"{c1.url}{path}", headers=stolen).text == "hello\n"  # its one use
    c1.stop()
    c1.start()
    # still within its validity: only the restart can be why it is refused
    assert time.time() - float(stolen[RELAY_HEADER].split(" ")[4]) < RELAY_VALIDITY_S
    assert web.get(f"{c1.url}{path}", headers=stolen).status_code == 401
    assert web.get(f"{c1.url}{path}", headers=auth(toks[Role.READ])).text == "hello\n"


def test_tokens_in_a_cluster_without_a_secret_refuse_to_start(
    relay_jobs, database, tmp_path, tokens
) -> None:
    path, _ = tokens
    env = {"PATH": "/usr/bin:/bin", "RUNYARD_DATABASE_URL": database,
           "RUNYARD_TOKENS_FILE": str(path), "RUNYARD_LOG_FORMAT": "json"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "runyard", "serve", "--jobs", str(relay_jobs),
         "--data-dir", str(tmp_path / "d"), "--port", str(free_port())],
        env={**env, "PYTHONPATH": ":".join(sys.path)}, capture_output=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert b"RUNYARD_CLUSTER_SECRET" in done.stderr
    with psycopg.connect(database) as conn:  # it stopped before touching the database
        assert conn.execute("SELECT to_regclass('servers')").fetchone() == (None,)


def described(resp: httpx.Response) -> dict[str, str]:
    """What an answer says of what GET would send, not of who sent it or when."""
    per_answer = {"date", "server", "x-request-id", "x-runyard-served-by"}
    return {k: v for k, v in resp.headers.items() if k not in per_answer}


@pytest.mark.timeout(90)
def test_head_is_relayed_wherever_get_is_and_answers_as_the_owner_does(cluster) -> None:
    # A probe: HEAD of the logs on c2 said `x-log-size: 0` (c2's empty data dir), HEAD of an
    # artifact 404, while GET of the same paths was relayed to c1 and right.
    c1, c2, run_id, toks = cluster
    read = auth(toks[Role.READ])
    for path, extra in (
        (f"/v1/runs/{run_id}/logs", {}),
        (f"/v1/runs/{run_id}/logs?offset=2&limit=7", {}),
        (f"/v1/runs/{run_id}/artifacts/outputs/a%20b/c.txt", {}),
        (f"/v1/runs/{run_id}/artifacts/outputs/a%20b/c.txt", {"Range": "bytes=1-2"}),
        (f"/v1/runs/{run_id}/artifacts/outputs/none.txt", {}),  # the owner's 404, not c2's
    ):
        owner = web.request("HEAD", f"{c1.url}{path}", headers={**read, **extra})
        got = web.request("HEAD", f"{c2.url}{path}", headers={**read, **extra})
        assert got.status_code == owner.status_code, path
        assert got.content == b"" and owner.content == b"", path
        assert described(got) == described(owner), path  # x-log-size, content-length, ...
        fetched = web.get(f"{c2.url}{path}", headers={**read, **extra})
        assert got.status_code == fetched.status_code, path
        assert got.headers["x-runyard-served-by"] == fetched.headers["x-runyard-served-by"] == "c1"
    logs = web.request("HEAD", f"{c2.url}/v1/runs/{run_id}/logs", headers=read)
    whole = "".join(f"line {i}\n" for i in range(1, LINES + 1))
    assert logs.headers["x-log-size"] == str(len(whole))
    assert logs.headers["content-length"] == logs.headers["x-log-size"]
    artifact = web.request(
        "HEAD", f"{c2.url}/v1/runs/{run_id}/artifacts/outputs/a%20b/c.txt", headers=read
    )
    assert artifact.status_code == 200 and artifact.headers["content-length"] == "6"  # hello\n
    # two Range lines reach the owner as they came: refused as the owner refuses them, not
    # the first served as if it were all that was asked
    twice = [*read.items(), ("Range", "bytes=0-1"), ("Range", "bytes=2-3")]
    path = f"/v1/runs/{run_id}/artifacts/outputs/a%20b/c.txt"
    owner, got = (
        web.get(f"{c1.url}{path}", headers=twice),
        web.get(f"{c2.url}{path}", headers=twice),
    )
    assert owner.status_code == got.status_code == 400, got.text
    assert got.json()["field"] == owner.json()["field"] == "header.Range"


@pytest.mark.timeout(90)
def test_a_relayed_downloads_conditions_are_the_owners(cluster) -> None:
    """If-None-Match and If-Match reach the owner, and its 304 and 412 come back as they are
    (a relayed 304 was a 502: no relayed route answered it)."""
    _, c2, run_id, toks = cluster
    read = auth(toks[Role.READ])
    url = f"{c2.url}/v1/runs/{run_id}/artifacts/outputs/a%20b/c.txt"
    etag = web.get(url, headers=read).headers["etag"]
    for method in ("GET", "HEAD"):
        same = web.request(method, url, headers={**read, "If-None-Match": etag})
        assert same.status_code == 304, (method, same.status_code, same.text)
        assert same.content == b"" and same.headers["etag"] == etag
        assert same.headers["x-runyard-served-by"] == "c1"
    other = web.get(url, headers={**read, "If-Match": '"other"'})
    assert other.status_code == 412, other.text
    assert other.json()["field"] == "header.If-Match"
    assert web.get(url, headers={**read, "If-Match": etag}).content == b"hello\n"


@pytest.mark.timeout(90)
def test_a_relayed_head_of_a_get_route_keeps_its_length(cluster) -> None:
    """A HEAD answered as its route's GET is relayed as a HEAD: the owner's Content-Length
    comes back (relayed as a GET, it was framed here and lost)."""
    c1, c2, run_id, toks = cluster
    read = auth(toks[Role.READ])
    path = f"/v1/runs/{run_id}/artifacts"
    got = web.get(f"{c2.url}{path}", headers=read)
    head = web.request("HEAD", f"{c2.url}{path}", headers=read)
    assert head.status_code == 200 and head.content == b"", head.status_code
    assert head.headers["x-runyard-served-by"] == "c1"
    assert head.headers["content-length"] == str(len(got.content)), head.headers
    owner = web.request("HEAD", f"{c1.url}{path}", headers=read)
    assert owner.headers["content-length"] == head.headers["content-length"]
