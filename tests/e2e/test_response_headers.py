"""Every answer says its type is to be believed (`nosniff`), and a file a program or a client
made is served so that a browser that shows it anyway runs nothing of it in this origin (an
attacker's probe: only the dashboard's pages said so)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import web

pytestmark = pytest.mark.e2e

PAGE = 'command = ["sh", "-c", "echo \'<script>alert(1)</script>\' | tee outputs/page.html"]\n'


def test_every_answer_is_nosniff_and_files_are_sandboxed(
    start_server, write_job, jobs_dir: Path
) -> None:
    write_job("page", PAGE)
    server = start_server(jobs_dir)
    with web.Client(base_url=server.url, timeout=30) as http:
        run = http.post("/v1/runs", json={"job": "page"}, headers={"prefer": "wait=30"}).json()
        assert run["state"] == "succeeded", run
        upload = http.put("/v1/uploads", params={"name": "u.html"}, content=b"<b>x</b>").json()
        files = [
            http.get(f"/v1/runs/{run['id']}/artifacts/outputs/page.html"),
            http.get(f"/v1/runs/{run['id']}/logs"),
            http.get(f"/v1/uploads/{upload['id']}/content"),
        ]
        for resp in files:
            assert resp.status_code == 200, resp.text
            assert resp.headers["x-content-type-options"] == "nosniff"
            csp = resp.headers["content-security-policy"]
            assert "sandbox" in csp and "default-src 'none'" in csp, resp.url
        others = [http.get("/v1/runs"), http.get("/v1/runs/nope"), http.get("/docs"),
                  http.get("/ui/"), http.get("/health/live")]  # fmt: skip
        for resp in others:
            assert resp.headers.get_list("x-content-type-options") == ["nosniff"], resp.url


def test_head_gives_a_downloads_headers_without_its_body(
    start_server, write_job, jobs_dir: Path
) -> None:
    """Download tools ask HEAD for the size first: it was 405, with an empty Allow."""
    write_job("page", PAGE)
    server = start_server(jobs_dir)
    with web.Client(base_url=server.url, timeout=30) as http:
        run = http.post("/v1/runs", json={"job": "page"}, headers={"prefer": "wait=30"}).json()
        upload = http.put("/v1/uploads", params={"name": "u.bin"}, content=b"12345").json()
        for path in (
            f"/v1/runs/{run['id']}/artifacts/outputs/page.html",
            f"/v1/runs/{run['id']}/logs",
            f"/v1/uploads/{upload['id']}/content",
        ):
            got, head = http.get(path), http.head(path)
            assert head.status_code == 200, (path, head.status_code)
            assert head.content == b""
            assert head.headers["content-length"] == str(len(got.content)) != "0"
            assert head.headers["content-type"] == got.headers["content-type"]
        missing = http.head(f"/v1/runs/{run['id']}/artifacts/outputs/none.txt")
        assert missing.status_code == 404
