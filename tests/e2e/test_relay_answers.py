"""A relayed answer is this server's answer: a member may be broken or compromised, so only a
status the route answers, and only the headers that describe the data, come from it. The
security headers are this server's own, as on a local answer (a probe: an artifact relayed
from a hostile member came back as active HTML with its cookies, CORS and redirects)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import psycopg
import pytest

from tests import web
from tests.support import ServerProcess, free_port, wait_for

pytestmark = pytest.mark.e2e

SECRET = "s3cret-of-the-cluster-0123456789"  # noqa: S105  a test cluster's
PROBLEM = "application/problem+json"
SCRIPT = b"<script>alert(document.domain)</script>"
HOSTILE = {
    "Content-Type": "text/html",
    "Set-Cookie": "session=evil; Path=/",
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Credentials": "true",
    "Refresh": "0; url=http://evil.example/",
    "Strict-Transport-Security": "max-age=99999999",
    "Content-Security-Policy": "script-src *",
    "Content-Disposition": "inline",
    "X-Content-Type-Options": "sniff",
    "Cache-Control": "public, max-age=31536000",
    "X-Request-ID": "evil-request",
    "X-Runyard-Served-By": "c1",
    "Location": "http://evil.example/phish",
}


class Evil(http.server.BaseHTTPRequestHandler):
    """A member answering by the tail of the path it is asked for (HTTP/1.0: each answer
    closes its connection, so the relay keeps none open to it)."""

    answers: ClassVar[dict[str, tuple[int, dict[str, str], bytes]]] = {
        "/outputs/x.html": (200, HOSTILE, SCRIPT),
        "/outputs/moved": (302, {"Location": "http://evil.example/phish"}, b""),
        "/outputs/weird": (599, {"Content-Type": PROBLEM}, b"{}"),
        "/artifacts": (200, {"Content-Type": "text/html"}, SCRIPT),  # a listing, as HTML
        "/outputs/part": (206, {"Content-Range": "bytes 0-1/2, <b>"}, b"ok"),
        "/outputs/two.html": (200, {"Content-Type": "text/html, text/plain"}, SCRIPT),
        "/logs": (401, {"Content-Type": PROBLEM, "WWW-Authenticate": "Bearer"}, b"{}"),
    }

    asked_encodings: ClassVar[list[str | None]] = []  # what each relayed request accepted

    def do_GET(self) -> None:
        if self.path.endswith("/outputs/slow"):
            self._trickle()
            return
        self._answer(body=True)

    def _trickle(self) -> None:
        """A head that never ends, a byte at a time, each well inside the relay's read timeout."""
        try:
            self.wfile.write(b"HTTP/1.0 200 OK\r\nX-Slow: ")
            while True:
                self.wfile.write(b"a")
                self.wfile.flush()
                time.sleep(0.2)  # the hostile member's pace: nothing in the test waits on it
        except OSError:
            return  # the relay gave up and closed the connection

    def do_DELETE(self) -> None:
        # the owner's disk too full to remove anything: nothing changed (docs/api.md)
        self.send_response_only(507)
        self.send_header("Content-Type", PROBLEM)
        self.end_headers()
        self.wfile.write(b'{"title": "Insufficient Storage", "status": 507}')

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        self.asked_encodings.append(self.headers.get("accept-encoding"))
        status, headers, content = next(
            (a for tail, a in self.answers.items() if self.path.endswith(tail)), (404, {}, b"")
        )
        self.send_response_only(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(content)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def evil() -> Iterator[str]:
    port = free_port()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Evil)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def relaying(start_server, write_job, jobs_dir: Path, database: str, tmp_path: Path, evil: str):
    """A real member `c1`, a run of whose files it has itself, and a run whose files, as far as
    the store says, are on the member `evil`."""
    write_job("page", 'command = ["sh", "-c", "mkdir outputs; echo hi > outputs/x.html"]\n'
              'artifacts = ["outputs/**"]\n')  # fmt: skip
    env = {"RUNYARD_DATABASE_URL": database, "RUNYARD_SERVER_ID": "c1",
           "RUNYARD_CLUSTER_SECRET": SECRET,
           "RUNYARD_HEARTBEAT_S": "1"}  # a relay's read timeout: 2 heartbeats + 5 s  # fmt: skip
    c1 = start_server(jobs_dir, capacity=2, data_dir=tmp_path / "c1", env=env)
    runs = [web.post(f"{c1.url}/v1/runs", json={"job": "page"}).json()["id"] for _ in range(2)]
    for run_id in runs:
        wait_for(lambda r=run_id: web.get(f"{c1.url}/v1/runs/{r}").json()["state"]
                 == "succeeded", timeout=60, what="the run to succeed")  # fmt: skip
    local, relayed = runs
    with psycopg.connect(database) as conn:
        conn.execute(
            "INSERT INTO servers (id, url, token, capacity, started_at, heartbeat_at, "
            "lease_expires_at) VALUES ('evil', %s, 'tok', 1, 0, 0, 1e12)", (evil,),
        )  # fmt: skip
        conn.execute("UPDATE attempts SET host = 'evil' WHERE run_id = %s", (relayed,))
    return c1, local, relayed


def test_a_relayed_file_carries_this_servers_security_headers_and_none_of_the_members(
    relaying: tuple[ServerProcess, str, str],
) -> None:
    c1, local, relayed = relaying
    own = web.get(f"{c1.url}/v1/runs/{local}/artifacts/outputs/x.html")
    assert own.status_code == 200 and own.text == "hi\n"
    for method in ("GET", "HEAD"):
        got = web.request(method, f"{c1.url}/v1/runs/{relayed}/artifacts/outputs/x.html")
        assert got.status_code == 200, got.text
        assert got.headers["x-runyard-served-by"] == "evil"
        for name in ("set-cookie", "access-control-allow-origin", "refresh", "location",
                     "access-control-allow-credentials", "strict-transport-security"):  # fmt: skip
            assert name not in got.headers, (method, name)
        (request_id,) = got.headers.get_list("x-request-id")  # this server's, once
        assert request_id != "evil-request"
        assert got.headers.get("cache-control") == own.headers.get("cache-control")
        for name in ("content-security-policy", "content-disposition", "x-content-type-options"):
            # this server's own, once, exactly as on the file it serves itself
            assert got.headers.get_list(name) == own.headers.get_list(name), (method, name)
        assert own.headers["content-disposition"] == 'attachment; filename="x.html"'
        assert "sandbox" in own.headers["content-security-policy"]
        assert own.headers["x-content-type-options"] == "nosniff"
        assert got.content == (SCRIPT if method == "GET" else b"")


@pytest.mark.parametrize(
    ("tail", "why"),
    [
        ("artifacts/outputs/moved", "status 302"),  # a redirect is never followed or passed on
        ("artifacts/outputs/weird", "status 599"),
        ("artifacts", "'text/html'"),  # a listing is JSON, never a page
        ("artifacts/outputs/part", "content-range"),  # not as runyard writes it
        ("artifacts/outputs/two.html", "content-type"),  # two types: no one media type (a probe)
    ],
)
def test_an_answer_no_relayed_route_gives_is_a_502_naming_the_member(
    relaying: tuple[ServerProcess, str, str], tail: str, why: str
) -> None:
    c1, _, relayed = relaying
    got = web.get(f"{c1.url}/v1/runs/{relayed}/{tail}")
    assert got.status_code == 502, (got.status_code, got.headers, got.content)
    assert got.headers["content-type"] == PROBLEM
    assert "location" not in got.headers
    problem = got.json()
    assert "'evil'" in problem["detail"] and why in problem["detail"], problem
    assert problem["type"] == "urn:runyard:problem:owner-invalid-answer"


def test_a_member_refusing_the_relay_is_a_503_to_retry_not_the_callers_401(
    relaying: tuple[ServerProcess, str, str],
) -> None:
    # a 401 would tell the caller its own token is bad (the dashboard asks for a new one)
    c1, _, relayed = relaying
    got = web.get(f"{c1.url}/v1/runs/{relayed}/logs")
    assert got.status_code == 503, (got.status_code, got.content)
    assert got.headers["retry-after"] == "1" and "www-authenticate" not in got.headers
    assert "'evil'" in got.json()["detail"] and "retry" in got.json()["detail"]


def test_a_relayed_delete_the_owners_full_disk_refused_is_its_507(
    relaying: tuple[ServerProcess, str, str],
) -> None:
    """A review: a 507 (nothing changed, the owner's disk full) was a 502 blaming the member."""
    c1, _, relayed = relaying
    got = web.delete(f"{c1.url}/v1/runs/{relayed}")
    assert got.status_code == 507, (got.status_code, got.content)
    assert got.headers["content-type"] == PROBLEM


def test_a_relayed_request_asks_for_the_bytes_as_they_are(
    relaying: tuple[ServerProcess, str, str],
) -> None:
    """A relayed answer keeps no Content-Encoding of the member's: a compressing proxy on the
    way must not compress it (it would go out as gzip labelled as the file's own type)."""
    c1, _, relayed = relaying
    Evil.asked_encodings.clear()
    web.get(f"{c1.url}/v1/runs/{relayed}/artifacts/outputs/x.html")
    assert Evil.asked_encodings == ["identity"]


def test_a_member_that_trickles_its_answers_head_is_given_up_at_the_read_timeout(
    relaying: tuple[ServerProcess, str, str],
) -> None:
    """A probe: a member sending its headers a byte at a time held the caller, and the relay,
    for as long as it went on (httpx's timeout is per read)."""
    c1, _, relayed = relaying
    got = web.get(f"{c1.url}/v1/runs/{relayed}/artifacts/outputs/slow", timeout=60)
    assert got.status_code == 503, (got.status_code, got.content)
    detail = got.json()["detail"]
    assert "'evil'" in detail and "did not come whole within 7 s" in detail, detail
