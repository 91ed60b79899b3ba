"""A download's Range read once and as RFC 9110 reads it, for artifacts and upload contents
alike (they share one response): If-Range before anything the Range says, several Range lines
one refusal, a set served for its satisfiable parts, every refusal problem JSON, and a save
dialog's name free of bidi and zero-width characters. Found by probes against a live server:
a stale If-Range still got a 416 or 400, two Range lines a plain-text answer (the refusal read
the last line, Starlette served the first), `bytes=0-1,5000000-` a 416, and
`invoice\\u202etxt.exe` offered as `invoiceexe.txt`."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import httpx
import pytest

from runyard.models import RunState
from tests import web
from tests.support import ServerProcess

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"
BODY = b"inside\n"  # 7 bytes, as ok.txt and the upload hold
RLO, ZWSP, ZWJ = "\u202e", "\u200b", "\u200d"
PROGRAM = r"""
import os
os.makedirs("outputs", exist_ok=True)
for name, data in (("outputs/ok.txt", b"inside\n"), ("outputs/invoice\u202etxt.exe", b"MZ"),
                   ("outputs/zero\u200bwidth\u200d.txt", b"z")):
    with open(name, "wb") as f:
        f.write(data)
    os.utime(name, (1700000000.25, 1700000000.25))  # a second long over: it has a date
"""


@pytest.fixture
def files(start_server, write_job, jobs_dir: Path, tmp_path: Path) -> tuple[ServerProcess, dict]:
    """A server, and the URLs of the same seven bytes as an artifact and as an upload."""
    script = tmp_path / "files.py"
    script.write_text(PROGRAM)
    write_job("files", f'command = ["{sys.executable}", "{script}"]\nartifacts = ["outputs/**"]\n')
    server = start_server(jobs_dir)
    with server.client() as c:
        run = c.submit("files")
        assert server.wait_run(c, run.id).state is RunState.SUCCEEDED
    upload = web.put(f"{server.url}/v1/uploads", params={"name": "ok.txt"}, content=BODY)
    assert upload.status_code == 201, upload.text
    return server, {
        "artifact": f"{server.url}/v1/runs/{run.id}/artifacts/outputs/ok.txt",
        "upload": f"{server.url}/v1/uploads/{upload.json()['id']}/content",
        "run": f"{server.url}/v1/runs/{run.id}/artifacts",
    }


def _urls(files) -> list[str]:
    return [files[1]["artifact"], files[1]["upload"]]


def _validators(client: httpx.Client, url: str) -> tuple[str, str]:
    head = client.head(url)
    assert head.status_code == 200
    return head.headers["etag"], head.headers["last-modified"]


def _is_range_problem(resp: httpx.Response, status: int = 400) -> bool:
    if resp.status_code != status or resp.headers["content-type"] != PROBLEM:
        return False
    problem = resp.json()
    slug = "bad-range" if status == 400 else "range-not-satisfiable"
    return (
        problem["type"] == f"urn:runyard:problem:{slug}" and problem.get("field") == "header.Range"
    )


def test_a_range_for_another_version_is_ignored_whatever_it_says(files) -> None:
    """RFC 9110 13.1.5: an If-Range that does not match means the whole file (200), never a
    416 or 400 for a Range that does not apply; one that matches lets the Range apply."""
    wrong = []
    with web.Client() as client:
        for url in _urls(files):
            etag, modified = _validators(client, url)
            for validator in ('"stale-etag"', f"W/{etag}", "Mon, 01 Jan 1990 00:00:00 GMT"):
                for range_ in ("bytes=9999999-", "bytes=zz", "bytes=1-3", "bytes=-0"):
                    headers = {"Range": range_, "If-Range": validator}
                    got = client.get(url, headers=headers)
                    if (got.status_code, got.content) != (200, BODY):
                        wrong.append((url, headers, got.status_code, got.content[:60]))
                    if client.head(url, headers=headers).status_code != 200:
                        wrong.append((url, headers, "HEAD"))
            for validator in (etag, modified):
                part = client.get(url, headers={"Range": "bytes=1-3", "If-Range": validator})
                if (part.status_code, part.content) != (206, b"nsi"):
                    wrong.append((url, validator, part.status_code, part.content[:60]))
                past = client.get(url, headers={"Range": "bytes=9999999-", "If-Range": validator})
                if not _is_range_problem(past, 416) or past.headers["content-range"] != "bytes */7":
                    wrong.append((url, validator, past.status_code, past.content[:60]))
            # two If-Range lines are no one validator: the condition is false
            twice = client.get(url, headers=[("Range", "bytes=1-3"), ("If-Range", etag),
                                             ("If-Range", etag)])  # fmt: skip
            if (twice.status_code, twice.content) != (200, BODY):
                wrong.append((url, "If-Range twice", twice.status_code))
    assert wrong == []


# the first was served and the last refused: each pair answered as neither alone would be
TWO_LINES = [("bytes=zz", "bytes=0-1"), ("bytes=5000000-", "bytes=0-1"),
             ("bytes=0-1", "bytes=2-3"), ("bytes=0-1", "items=1")]  # fmt: skip


def test_several_range_lines_are_one_refusal_as_problem_json(files) -> None:
    """The refusal read the last Range line and Starlette served the first: `bytes=zz` then
    `bytes=0-1` was a plain-text 400, `bytes=5000000-` then `bytes=0-1` a bodiless 416."""
    wrong = []
    with web.Client() as client:
        for url in _urls(files):
            for first, second in TWO_LINES:
                headers = [("Range", first), ("Range", second)]
                got = client.get(url, headers=headers)
                if not _is_range_problem(got) or "given 2 times" not in got.json()["detail"]:
                    wrong.append((url, headers, got.status_code, got.content[:80]))
                if client.head(url, headers=headers).status_code != 400:
                    wrong.append((url, headers, "HEAD"))
            # for another version, the Range lines are ignored, however many
            etag = '"stale-etag"'
            stale = client.get(url, headers=[("Range", "bytes=zz"), ("Range", "bytes=0-1"),
                                             ("If-Range", etag)])  # fmt: skip
            if (stale.status_code, stale.content) != (200, BODY):
                wrong.append((url, "stale", stale.status_code))
    assert wrong == []


def test_a_range_set_is_served_for_its_satisfiable_parts(files) -> None:
    """RFC 9110 14.1.1: a set is satisfiable if one of its parts is; the others are dropped.
    `bytes=0-1,5000000-` was a 416."""
    wrong = []
    with web.Client() as client:
        for url in _urls(files):
            one = client.get(url, headers={"Range": "bytes=0-1,5000000-"})
            if (one.status_code, one.content, one.headers.get("content-range")) != (
                206, b"in", "bytes 0-1/7"
            ):  # fmt: skip
                wrong.append((url, "one left", one.status_code, one.content[:80]))
            two = client.get(url, headers={"Range": "bytes=-0,0-0,100-,2-3,7-"})
            parts = (b"Content-Range: bytes 0-0/7\r\n\r\ni\r\n",
                     b"Content-Range: bytes 2-3/7\r\n\r\nsi\r\n")  # fmt: skip
            if two.status_code != 206 or not all(p in two.content for p in parts):
                wrong.append((url, "two left", two.status_code, two.content[:200]))
            if not two.headers["content-type"].startswith("multipart/byteranges"):
                wrong.append((url, "two left", two.headers["content-type"]))
            if b"/7\r\n\r\n" in two.content.replace(parts[0], b"").replace(parts[1], b""):
                wrong.append((url, "a part past the end was sent", two.content[:300]))
            none = client.get(url, headers={"Range": "bytes=7-,100-200,-0"})
            if not _is_range_problem(none, 416) or none.headers["content-range"] != "bytes */7":
                wrong.append((url, "none left", none.status_code, none.content[:80]))
    assert wrong == []


def test_a_save_dialog_is_offered_no_bidi_or_zero_width_character(files) -> None:
    """A right-to-left override made `invoice<RLO>txt.exe` show as `invoiceexe.txt` in a save
    dialog; zero-width characters hide what a name holds. The listing keeps the true name."""
    server, urls = files
    listed = {a["path"] for a in web.get(urls["run"]).json()["artifacts"]}
    assert {f"outputs/invoice{RLO}txt.exe", f"outputs/zero{ZWSP}width{ZWJ}.txt"} <= listed
    for name, offered in ((f"invoice{RLO}txt.exe", "invoicetxt.exe"),
                          (f"zero{ZWSP}width{ZWJ}.txt", "zerowidth.txt")):  # fmt: skip
        for method in ("GET", "HEAD"):
            resp = web.request(method, f"{urls['run']}/outputs/{name}")
            assert resp.status_code == 200
            assert resp.headers["content-disposition"] == f'attachment; filename="{offered}"'
    # an upload's name is stored without them; one stored before that (or by another
    # version) is offered without them all the same
    upload_id = hashlib.sha256(BODY).hexdigest()
    meta = server.data_dir / "uploads" / f"{upload_id}.json"
    record = json.loads(meta.read_text())
    meta.chmod(0o644)
    meta.write_text(json.dumps({**record, "name": f"report{RLO}fdp.exe"}))
    got = web.get(urls["upload"])
    assert got.status_code == 200 and got.content == BODY
    assert got.headers["content-disposition"] == 'attachment; filename="reportfdp.exe"'


def test_the_openapi_document_says_how_downloads_answer_ranges(start_server) -> None:
    """Every download that serves ranges declares the headers it reads, its 206 (one range,
    or several as multipart/byteranges) and its 416; an artifact's 503 out-of-resources too.
    None was declared, so schemathesis took a 206 for an answer the server never gives."""
    server = start_server()
    paths = web.get(f"{server.url}/openapi.json").json()["paths"]
    wrong = []
    for path in ("/v1/runs/{run_id}/artifacts/{path}", "/v1/uploads/{upload_id}/content"):
        for method in ("get", "head"):
            op = paths[path][method]
            headers = {p["name"] for p in op["parameters"] if p["in"] == "header"}
            if not {"Range", "If-Range"} <= headers:
                wrong.append((method, path, "headers", headers))
            answers = op["responses"]
            if "multipart/byteranges" not in answers.get("206", {}).get("content", {}):
                wrong.append((method, path, "206"))
            if PROBLEM not in answers.get("416", {}).get("content", {}):
                wrong.append((method, path, "416"))
            if "artifacts" in path and PROBLEM not in answers.get("503", {}).get("content", {}):
                wrong.append((method, path, "503"))
    assert wrong == []
