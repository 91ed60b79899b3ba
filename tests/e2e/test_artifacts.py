"""No artifact request escapes the run's workspace, whatever the path or the program does."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys

import httpx
import pytest

from runyard.models import RunState
from tests import web
from tests.e2e.conftest import measure
from tests.support import wait_for

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
    body = web.get(f"{server.url}/v1/runs/{run_id}/artifacts").json()
    assert [a["path"] for a in body["artifacts"]] == ["outputs/ok.txt"]
    resp = web.get(f"{server.url}/v1/runs/{run_id}/artifacts/outputs/ok.txt")
    assert resp.status_code == 200
    assert resp.content == b"inside\n"


def _raw_get(server, run_id: str, path: str) -> httpx.Response:
    # send the path exactly as written: no client-side normalisation of dots or escapes
    url = httpx.URL(f"{server.url}/").copy_with(
        raw_path=f"/v1/runs/{run_id}/artifacts/{path}".encode()
    )
    return web.get(url)


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
    resp = web.get(
        f"{server.url}/v1/runs/{run_id}/artifacts/outputs/ok.txt", headers={"Range": "bytes=1-3"}
    )
    assert resp.status_code == 206
    assert resp.content == b"nsi"
    # a unit the server does not know: the header is ignored, the whole artifact served
    # (RFC 9110 14.2), not refused
    whole = web.get(
        f"{server.url}/v1/runs/{run_id}/artifacts/outputs/ok.txt", headers={"Range": "items=1-3"}
    )
    assert whole.status_code == 200
    assert whole.content == b"inside\n"


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
        resp = web.get(f"{server.url}/v1/runs/{run.id}/artifacts/outputs/a.txt")
        assert resp.status_code == 403
        assert b"root:" not in resp.content
        c.cancel(run.id)


# -- bounded work and odd workspaces -------------------------------------------------------

ODD_WORKSPACE = r"""
import os
os.makedirs("outputs/many", exist_ok=True)
for i in range(int(os.environ.get("FILES", "0"))):
    open(f"outputs/many/f{i:05}", "w").close()
with open("outputs/a\nb.txt", "w") as fh:  # a name no request path can carry
    fh.write("x")
with open("outputs/sparse.bin", "wb") as fh:  # 1 GiB long, nothing written
    fh.truncate(1 << 30)
os.chdir("outputs")
for _ in range(int(os.environ.get("DEPTH", "0"))):  # deeper than Python's recursion limit
    os.mkdir("d")
    os.chdir("d")
with open("leaf.txt", "w") as fh:
    fh.write("deep")
"""


@pytest.fixture
def odd_job(write_job, jobs_dir, tmp_path):
    script = tmp_path / "odd.py"
    script.write_text(ODD_WORKSPACE)

    def write(name: str, files: int = 0, depth: int = 0, extra: str = "") -> None:
        write_job(
            name,
            f'command = ["{sys.executable}", "{script}"]\n{extra}'
            f'[env]\nFILES = "{files}"\nDEPTH = "{depth}"\n',
        )

    return write


def test_bad_ranges_are_problems_and_give_back_their_descriptors(planted) -> None:
    """Each 416 or 400 used to leak the artifact's descriptor (the leak check fails on it)."""
    server, run_id = planted
    url = f"{server.url}/v1/runs/{run_id}/artifacts/outputs/ok.txt"
    before = measure(server)
    with web.Client() as client:
        for _ in range(40):
            unsatisfiable = client.get(url, headers={"Range": "bytes=100-200"})
            assert unsatisfiable.status_code == 416
            assert unsatisfiable.headers["content-range"] == "bytes */7"
            assert "Range" in unsatisfiable.json()["detail"]
            malformed = client.get(url, headers={"Range": "bytes=z-1"})
            assert malformed.status_code == 400
            assert malformed.headers["content-type"] == "application/problem+json"
    wait_for(lambda: measure(server).fds <= before.fds, what="descriptors given back")


# Each read by Starlette's int(): `0_1` was byte 1, `+1` byte 1, `--5` a 416, a no-break space
# a space (the HTTP parser passes bytes 0x80-0xff of a field value on, read as Latin-1).
HOSTILE_RANGES = [
    b"bytes=1_0-20",
    b"bytes=0_1-3",
    b"bytes=1-0_3",
    b"bytes=+1-2",
    b"bytes=1-+3",
    b"bytes=--5",
    b"bytes=-+5",
    b"bytes=1--2",
    b"bytes=\xa01-3",
    b"bytes=1-3\x85",
    "bytes=\u0661-\u0663".encode(),  # Arabic-Indic 1-3, as UTF-8 on the wire
    b"bytes=1 -3",
    b"bytes=1- 3",
    b"bytes=1-2,x",
    b"bytes=1-3,-",
    b"bytes=0x1-3",
    b"bytes=1.0-3",
    b"bytes=5",
    b"bytes=-",
    b"bytes=",
    b"bytes=3-1",
    b"bytes=99-1",
]
# ok.txt is b"inside\n": what each Range gets back, as before
GOOD_RANGES = [
    (b"bytes=1-3", 206, b"nsi"),
    (b"bytes=-5", 206, b"side\n"),
    (b"bytes=5-", 206, b"e\n"),
    (b"bytes=0-0, 2-3", 206, None),  # multipart/byteranges, read below
    (b"bytes=0-" + b"9" * 30, 206, b"inside\n"),
    (b"bytes=7-", 416, None),
    (b"bytes=-0", 416, None),
    (b"bytes=100-200", 416, None),
    (b"items=1-3", 200, b"inside\n"),
]


def test_every_malformed_range_is_a_bad_range(planted) -> None:
    server, run_id = planted
    url = f"{server.url}/v1/runs/{run_id}/artifacts/outputs/ok.txt"
    wrong = []
    with web.Client() as client:
        for header in HOSTILE_RANGES:
            resp = client.get(url, headers={"Range": header})
            kind = resp.json().get("type") if resp.status_code == 400 else None
            if kind != "urn:runyard:problem:bad-range":
                wrong.append((header, resp.status_code, resp.headers.get("content-range")))
            head = client.head(url, headers={"Range": header})
            if head.status_code != 400:
                wrong.append((header, "HEAD", head.status_code))
        for header, status, body in GOOD_RANGES:
            resp = client.get(url, headers={"Range": header})
            if resp.status_code != status or (body is not None and resp.content != body):
                wrong.append((header, resp.status_code, resp.content[:40]))
    assert wrong == []
    multi = web.get(url, headers={"Range": "bytes=0-0, 2-3"})
    assert multi.headers["content-type"].startswith("multipart/byteranges")
    assert b"Content-Range: bytes 0-0/7\r\n\r\ni\r\n" in multi.content
    assert b"Content-Range: bytes 2-3/7\r\n\r\nsi\r\n" in multi.content


def test_listing_comes_in_bounded_pages(start_server, odd_job, jobs_dir) -> None:
    odd_job("many", files=2500)
    server = start_server(jobs_dir)
    with server.client() as c:
        run = server.wait_run(c, c.submit("many").id)
    url = f"{server.url}/v1/runs/{run.id}/artifacts"
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
        page = web.get(url, params=params).json()
        assert len(page["artifacts"]) <= 1000
        seen += [a["path"] for a in page["artifacts"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages >= 3
    assert len(seen) == len(set(seen)) == 2500 + 2  # many/*, leaf.txt, sparse.bin
    for bad in ({"limit": 0}, {"limit": 10**6}, {"cursor": "not a cursor"}, {"cursor": "Li4"}):
        refused = web.get(url, params=bad)
        assert refused.status_code == 422, bad
        assert next(iter(bad)) in refused.json()["detail"]


def test_deep_sparse_and_unnameable_files_list_and_delete(
    deep_trees, start_server, odd_job, jobs_dir
):
    """1,200 levels: the listing answered 500 (RecursionError) and DELETE removed the record,
    then failed on the files and left them. A sparse file counted its apparent 1 GiB, and a
    name with a newline was listed but could not be fetched."""
    odd_job("deep", depth=1200)
    server = start_server(jobs_dir)
    with server.client() as c:
        run = server.wait_run(c, c.submit("deep").id)
    url = f"{server.url}/v1/runs/{run.id}"
    listing = web.get(f"{url}/artifacts")
    assert listing.status_code == 200, listing.text
    paths = [a["path"] for a in listing.json()["artifacts"]]
    deep = next(p for p in paths if p.endswith("/leaf.txt"))
    assert deep.count("/") == 1201
    assert "outputs/sparse.bin" in paths
    assert not any("\n" in p for p in paths)  # never listed, since never downloadable
    assert listing.json()["workspace_bytes"] < 64 << 20  # blocks held, not the 1 GiB length
    assert web.get(f"{url}/artifacts/{deep}").content == b"deep"
    assert web.delete(url).status_code == 204
    assert not (server.data_dir / "runs" / run.id).exists()
    assert web.get(url).status_code == 404


GROWER = """
import os, time
os.makedirs("outputs", exist_ok=True)
with open("outputs/grow.bin", "ab") as f:
    f.write(b"x" * 4_000_000)
    f.flush()
    while not os.path.exists("stop"):  # a checkpoint its program keeps writing
        f.write(b"y" * 65536)
        f.flush()
        time.sleep(0.002)
"""


def test_a_file_still_growing_downloads_as_big_as_announced(
    start_server, write_job, jobs_dir, tmp_path
) -> None:
    """Starlette read on to the end of the file, past the Content-Length it had announced,
    and uvicorn cut every such download short."""
    script = tmp_path / "grow.py"
    script.write_text(GROWER)
    write_job("grow", f'command = ["{sys.executable}", "{script}"]\nartifacts = ["outputs/**"]\n')
    server = start_server(jobs_dir)
    with server.client() as c:
        run = c.submit("grow")
        url = f"{server.url}/v1/runs/{run.id}/artifacts/outputs/grow.bin"
        workspace = server.data_dir / "runs" / run.id / "workspace"
        grown = workspace / "outputs" / "grow.bin"
        try:
            wait_for(lambda: grown.is_file() and grown.stat().st_size > 4_000_000, what="4 MB")
            for _ in range(3):
                resp = web.get(url, timeout=60)
                assert resp.status_code == 200, resp.text[:200]
                assert len(resp.content) == int(resp.headers["content-length"]) > 4_000_000
        finally:
            (workspace / "stop").touch()
        assert server.wait_run(c, run.id).state is RunState.SUCCEEDED


SHRINKING = """
command = ["sh", "-c", "mkdir -p outputs && head -c 32000000 /dev/zero > outputs/t.bin"]
artifacts = ["outputs/**"]
"""


SHRINK_EVENTS = ("artifact_shrank", "unhandled_error")
TRACED = ("unhandled_error", "Traceback", "Exception in ASGI application")


def _slow_download(server, path: str, range_: str | None) -> socket.socket:
    """A download read by a client with a small receive buffer: the server is a few MB ahead
    of it at most, however large the file."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", server.port))
    asked = f"Range: {range_}\r\n" if range_ else ""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{asked}\r\n".encode())
    return sock


def _read_to_the_end(sock: socket.socket) -> bytes:
    """Everything sent until the server closed the connection (or reset it)."""
    got = bytearray()
    with contextlib.suppress(ConnectionResetError):
        while piece := sock.recv(1 << 16):
            got += piece
    return bytes(got)


@pytest.mark.parametrize("range_", [None, "bytes=1000-", "bytes=0-99,1000-"])
def test_an_artifact_cut_back_while_it_downloads_cuts_the_answer_in_one_line(
    start_server, write_job, jobs_dir, range_
) -> None:
    """Its answer, shorter than its Content-Length now, was ended short and uvicorn raised:
    an `unhandled_error` with a traceback at every such download (a probe). It is cut as a
    client gone mid-download is, and said in one warning naming the run and the path."""
    write_job("shrink", SHRINKING)
    server = start_server(jobs_dir)
    with server.client() as c:
        run = server.wait_run(c, c.submit("shrink").id)
    artifact = server.data_dir / "runs" / run.id / "workspace" / "outputs" / "t.bin"
    sock = _slow_download(server, f"/v1/runs/{run.id}/artifacts/outputs/t.bin", range_)
    try:
        begun = bytearray()
        while len(begun) < 1 << 20:  # a MiB of it taken: the server reads on ahead
            piece = sock.recv(1 << 16)
            assert piece, begun[:200]
            begun += piece
        assert begun.split(b" ", 2)[1] in (b"200", b"206"), begun[:200]
        os.truncate(artifact, 0)  # its program cuts it back
        answer = bytes(begun) + _read_to_the_end(sock)
    finally:
        sock.close()
    headers, _, body = answer.partition(b"\r\n\r\n")
    announced = int(re.search(rb"(?im)^content-length: *(\d+)", headers)[1])  # type: ignore[index]
    assert 1 << 19 < len(body) < announced  # cut, not ended as if whole
    said = wait_for(
        lambda: [e for e in _events(server) if e.get("event") in SHRINK_EVENTS] or None,
        what="the download's end in the log",
    )
    lines = server.log_path.read_text().splitlines()
    assert [line[:200] for line in lines if any(t in line for t in TRACED)] == []
    assert [(e["event"], e["level"], e["run_id"], e["path"]) for e in said] == [
        ("artifact_shrank", "warning", run.id, "outputs/t.bin")
    ]


def _events(server) -> list[dict[str, object]]:
    lines = server.log_path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]
