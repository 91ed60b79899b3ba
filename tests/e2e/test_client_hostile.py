"""The Python client and the CLI against a server that is not what it claims (an attacker's
probe): a listing that names files outside the folder, a redirect, a stream that always
ends, a log or a listing that never moves on, an answer of 70 MiB, a server that is not
there. Each is a clear error, bounded in time and memory; none writes outside its folder."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from runyard.client import APIError, Client
from runyard.client_guards import MAX_ANSWER_BYTES, ClientError
from tests.support import free_port

pytestmark = pytest.mark.e2e

RUN = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
Answer = Callable[[BaseHTTPRequestHandler], None]


class Hostile:
    """A fake server on loopback: `answers` maps a path's start to how it is answered."""

    def __init__(self, answers: dict[str, Answer]) -> None:
        self.asked: list[str] = []
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hostile.asked.append(self.path)
                for start, answer in answers.items():
                    if self.path.startswith(start):
                        answer(self)
                        return
                self.send_error(404)

            def log_message(self, *_args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def json_answer(body: object, headers: dict[str, str] | None = None) -> Answer:
    def answer(h: BaseHTTPRequestHandler) -> None:
        data = json.dumps(body).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    return answer


@pytest.fixture
def hostile() -> Iterator[Callable[[dict[str, Answer]], Hostile]]:
    made: list[Hostile] = []

    def make(answers: dict[str, Answer]) -> Hostile:
        made.append(Hostile(answers))
        return made[-1]

    yield make
    for h in made:
        h.close()


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runyard", *args, "--server", url],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def test_a_listing_cannot_make_a_download_write_outside_its_folder(hostile, tmp_path: Path) -> None:
    named = ("../../escaped.txt", str(tmp_path / "abs.txt"))
    at = "2026-01-01T00:00:00Z"
    listing = {"artifacts": [{"path": p, "size": 4, "modified_at": at} for p in named]}

    def content(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "4")
        h.end_headers()
        h.wfile.write(b"evil")

    server = hostile({f"/v1/runs/{RUN}/artifacts/": content,  # the first that matches
                      f"/v1/runs/{RUN}/artifacts": json_answer(listing)})  # fmt: skip
    folder = tmp_path / "dl" / "a" / "b"
    out = cli(server.url, "artifacts", RUN, "--download", str(folder))
    assert out.returncode == 2, out
    said = " ".join(out.stderr.split())  # as the console wrapped it
    assert "Traceback" not in said and "not a path inside a folder" in said
    assert not list(tmp_path.rglob("escaped.txt")) and not (tmp_path / "abs.txt").exists()
    assert not [a for a in server.asked if "/artifacts/" in a]  # not even fetched


def test_a_redirect_is_an_error_never_followed_nor_saved(hostile) -> None:
    elsewhere = hostile({})

    def redirect(h: BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", f"{elsewhere.url}/steal")
        h.send_header("Content-Length", "0")
        h.end_headers()

    server = hostile({"/": redirect})
    token = "t0ken"  # noqa: S105  a test value
    with Client(server.url, token=token) as c, pytest.raises(APIError) as caught:
        c.run(RUN)
    assert caught.value.status == 302 and "never redirects" in caught.value.detail
    assert elsewhere.asked == []  # the token went nowhere


def test_what_never_moves_on_is_an_error_not_a_loop(hostile) -> None:
    def log(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("X-Next-Offset", "0")
        h.send_header("Content-Length", "3")
        h.end_headers()
        h.wfile.write(b"abc")

    def ends(h: BaseHTTPRequestHandler) -> None:  # a stream that ends without its end event
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Content-Length", "0")
        h.end_headers()

    page = {"runs": [], "next_cursor": "again"}
    server = hostile({"/v1/runs?": json_answer(page), f"/v1/runs/{RUN}/logs/stream": ends,
                      f"/v1/runs/{RUN}/logs": log})  # fmt: skip
    with Client(server.url) as c:
        with pytest.raises(ClientError, match="does not move past"):
            c.logs(RUN, 0)
        with pytest.raises(ClientError, match="twice"):
            list(c.iter_runs())
        with pytest.raises(ClientError, match="without its end event"):
            list(c.stream_log(RUN, retries=2))
    assert sum("/logs/stream" in a for a in server.asked) == 3  # 1 + 2 retries, then given up
    out = cli(server.url, "logs", RUN)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out


def test_an_answer_over_the_cap_is_refused_as_it_is_read(hostile) -> None:
    def huge(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.end_headers()  # no length: read until the connection ends
        piece = b" " * 2**20
        try:
            for _ in range(MAX_ANSWER_BYTES // 2**20 + 8):
                h.wfile.write(piece)
        except OSError:
            pass  # the client stopped reading: as it should

    server = hostile({"/": huge})
    with Client(server.url) as c, pytest.raises(ClientError, match="MiB"):
        c.run(RUN)


def test_the_cli_says_what_went_wrong_in_one_line(hostile) -> None:
    def not_json(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "9")
        h.end_headers()
        h.wfile.write(b"<html>no")

    server = hostile({"/": not_json})
    for url in (server.url, f"http://127.0.0.1:{free_port()}"):  # nobody there
        out = cli(url, "show", RUN)
        assert out.returncode == 2, out
        assert "Traceback" not in out.stderr and "error" in out.stderr, out.stderr


def test_an_answer_that_trickles_is_given_up(hostile) -> None:
    """httpx's timeout is per read: a byte every few seconds held `runyard show` for ever."""
    import time

    import httpx

    from runyard.client_guards import read_capped

    def trickle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.end_headers()
        try:
            for _ in range(50):
                h.wfile.write(b"x")
                time.sleep(0.1)
        except OSError:
            pass  # the client gave up: as it should

    server = hostile({"/": trickle})
    with (
        httpx.Client() as http,
        http.stream("GET", f"{server.url}/v1/runs") as resp,
        pytest.raises(ClientError, match="bytes/s"),
    ):
        read_capped(resp, 2**20, min_rate=100.0, grace_s=1.0)


def test_a_stream_line_without_end_is_refused_as_it_grows(hostile) -> None:
    """httpx_sse gathers a line whole: 600 MB without a line break took 600 MB."""
    from runyard.client_streams import MAX_SSE_LINE

    def endless(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.end_headers()
        h.wfile.write(b"event: log\ndata: ")
        try:
            for _ in range(MAX_SSE_LINE // 2**20 + 8):
                h.wfile.write(b"x" * 2**20)
        except OSError:
            pass  # the client stopped reading: as it should

    server = hostile({"/": endless})
    with Client(server.url) as c, pytest.raises(ClientError, match="stream line"):
        list(c.stream_log(RUN))
    assert len(server.asked) == 1  # not asked again: the server's fault, not the network's
