"""No artifact request escapes the run's workspace, whatever the path or the program does."""

from __future__ import annotations

import httpx
import pytest

from runyard.models import RunState

pytestmark = pytest.mark.e2e

# The program plants links leading out of its workspace, and a real file for contrast.
PLANTER = r"""
command = ["sh", "-c", '''
mkdir -p outputs/sub
echo inside > outputs/ok.txt
echo secret-outside > "$RUNYARD_WORKSPACE/../outside.txt"
ln -s /etc/passwd outputs/passwd
ln -s "$RUNYARD_WORKSPACE/../outside.txt" outputs/rel
ln -s / outputs/root
ln -s .. outputs/up
ln "$RUNYARD_WORKSPACE/../outside.txt" outputs/hard 2>/dev/null || true
echo ok
''']
artifacts = ["outputs/**"]
"""

TRAVERSALS = [
    "../outside.txt",
    "outputs/../../outside.txt",
    "outputs/../params.json",
    "/etc/passwd",
    "outputs/passwd",
    "outputs/rel",
    "outputs/root/etc/passwd",
    "outputs/up/outside.txt",
    "outputs/hard",
    "outputs/%2e%2e/%2e%2e/outside.txt",
    "outputs%2f..%2f..%2foutside.txt",
    "outputs/..%2f..%2foutside.txt",
    "outputs/%2e%2e%2fparams.json",
    "outputs\\..\\..\\outside.txt",
    "outputs/ok.txt%00.png",
    "%2fetc%2fpasswd",
    "outputs/sub/../../../outside.txt",
    "....//outside.txt",
    "outputs/%252e%252e/outside.txt",
    "outputs/%2E%2E/%2E%2E/outside.txt",
    "%2e%2e/outside.txt",
    ".%2e/outside.txt",
    "outputs/.%2e/.%2e/outside.txt",
    "outputs/..%5c..%5coutside.txt",
    "outputs/ok.txt%2f..%2f..%2foutside.txt",
    "outputs/..;/..;/outside.txt",
    "outputs/%c0%ae%c0%ae/%c0%ae%c0%ae/outside.txt",
    "outputs/%e2%80%a5/outside.txt",
    "outputs/root/proc/self/environ",
    "outputs/up/workspace/params.json",
    "outputs/up/../outside.txt",
    "outputs/ok.txt/../../outside.txt",
    "~/.bashrc",
    "outputs/ok.txt/",
]


@pytest.fixture
def planted(start_server, write_job, jobs_dir):
    write_job("planter", PLANTER)
    server = start_server(jobs_dir)
    with server.client() as c:
        run = c.submit("planter")
        assert server.wait_run(c, run.id).state is RunState.SUCCEEDED
    return server, run.id


def test_listing_shows_only_plain_files(planted) -> None:
    server, run_id = planted
    body = httpx.get(f"{server.url}/v1/runs/{run_id}/artifacts").json()
    assert [a["path"] for a in body["artifacts"]] == ["outputs/ok.txt"]
    resp = httpx.get(f"{server.url}/v1/runs/{run_id}/artifacts/outputs/ok.txt")
    assert resp.status_code == 200
    assert resp.content == b"inside\n"


def _raw_get(server, run_id: str, path: str) -> httpx.Response:
    # send the path exactly as written: no client-side normalisation of dots or escapes
    url = httpx.URL(f"{server.url}/").copy_with(
        raw_path=f"/v1/runs/{run_id}/artifacts/{path}".encode()
    )
    return httpx.get(url)


def test_traversal_corpus_is_refused(planted) -> None:
    server, run_id = planted
    escaped = []
    for path in TRAVERSALS:
        resp = _raw_get(server, run_id, path)
        leaked = b"secret-outside" in resp.content or b"root:" in resp.content
        if resp.status_code not in (400, 403, 404, 422) or leaked:
            escaped.append((path, resp.status_code))
    assert escaped == []
    assert len(TRAVERSALS) >= 30


def test_odd_but_inside_paths_serve_nothing_else(planted) -> None:
    server, run_id = planted
    for path in ["outputs/./ok.txt", "outputs//ok.txt", "./outputs/ok.txt"]:
        resp = _raw_get(server, run_id, path)
        assert resp.status_code in (200, 403, 404), (path, resp.status_code)
        if resp.status_code == 200:
            assert resp.content == b"inside\n"


def test_range_request(planted) -> None:
    server, run_id = planted
    resp = httpx.get(
        f"{server.url}/v1/runs/{run_id}/artifacts/outputs/ok.txt", headers={"Range": "bytes=1-3"}
    )
    assert resp.status_code == 206
    assert resp.content == b"nsi"


def test_symlink_swapped_in_after_listing_is_refused(start_server, write_job, jobs_dir) -> None:
    """The program lists fine, then replaces its artifact with a link: open-time check."""
    write_job(
        "swapper",
        'command = ["sh", "-c", "mkdir -p outputs; echo fine > outputs/a.txt; '
        "while [ ! -e go ]; do sleep 0.05; done; "
        "rm outputs/a.txt; ln -s /etc/passwd outputs/a.txt; "
        'touch swapped; sleep 60"]\n',
    )
    server = start_server(jobs_dir)
    from tests.support import wait_for

    with server.client() as c:
        run = c.submit("swapper")
        ws = server.data_dir / "runs" / run.id / "workspace"
        wait_for(
            lambda: [a.path for a in c.artifacts(run.id).artifacts] == ["outputs/a.txt"],
            what="listed",
        )
        (ws / "go").touch()
        wait_for((ws / "swapped").exists, what="swap")
        resp = httpx.get(f"{server.url}/v1/runs/{run.id}/artifacts/outputs/a.txt")
        assert resp.status_code == 403
        assert b"root:" not in resp.content
        c.cancel(run.id)
