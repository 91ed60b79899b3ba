"""Every answer says its type is to be believed (`nosniff`), and a file a program or a client
made is served so that a browser that shows it anyway runs nothing of it in this origin (an
attacker's probe: only the dashboard's pages said so). Downloads answer HEAD."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import web

pytestmark = pytest.mark.e2e

PAGE = 'command = ["sh", "-c", "echo \'<script>alert(1)</script>\' | tee outputs/page.html"]\n'


@pytest.fixture
def served(start_server, write_job, jobs_dir: Path) -> Iterator[tuple[httpx.Client, list[str]]]:
    """A client of a server with a run's page, its log and an upload: their download paths."""
    write_job("page", PAGE)
    server = start_server(jobs_dir)
    with web.Client(base_url=server.url, timeout=30) as http:
        run = http.post("/v1/runs", json={"job": "page"}, headers={"prefer": "wait=30"}).json()
        assert run["state"] == "succeeded", run
        upload = http.put("/v1/uploads", params={"name": "u.html"}, content=b"<b>x</b>").json()
        yield (
            http,
            [
                f"/v1/runs/{run['id']}/artifacts/outputs/page.html",
                f"/v1/runs/{run['id']}/logs",
                f"/v1/uploads/{upload['id']}/content",
            ],
        )


def test_every_answer_is_nosniff_and_files_are_sandboxed(
    served: tuple[httpx.Client, list[str]],
) -> None:
    http, files = served
    for path in files:
        resp = http.get(path)
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-content-type-options"] == "nosniff"
        csp = resp.headers["content-security-policy"]
        assert "sandbox" in csp and "default-src 'none'" in csp, path
    for path in ("/v1/runs", "/v1/runs/nope", "/docs", "/ui/", "/health/live"):
        assert http.get(path).headers.get_list("x-content-type-options") == ["nosniff"], path


def test_head_gives_a_downloads_headers_without_its_body(
    served: tuple[httpx.Client, list[str]],
) -> None:
    """Download tools ask HEAD for the size first: it was 405, with an empty Allow."""
    http, files = served
    for path in files:
        got, head = http.get(path), http.head(path)
        assert head.status_code == 200, (path, head.status_code)
        assert head.content == b""
        assert head.headers["content-length"] == str(len(got.content)) != "0"
        assert head.headers["content-type"] == got.headers["content-type"]
    missing = http.head(files[0].replace("page.html", "none.txt"))
    assert missing.status_code == 404
