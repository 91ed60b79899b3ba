"""POST /v1/runs as multipart/form-data (issue 18): the run and its files in one request, the
files streamed to the uploads; a request that fails keeps none of the files it brought."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from runyard.auth import Role, create_token
from tests import web
from tests.e2e.test_failpoints import set_faults
from tests.support import wait_for

pytestmark = pytest.mark.e2e

JOB = """
command = ["sh", "-c", 'wc -l < "$0" | tr -d " " > "$RUNYARD_ARTIFACTS_DIR/lines.txt"', "{data}"]
[params.data]
type = "file"
max_mb = 1
accept = [".csv"]
[params.note]
type = "str"
default = ""
"""
TABLE = b"a,b\n1,2\n3,4\n"


@pytest.fixture
def server(start_server, tmp_path: Path):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "count.toml").write_text(JOB)
    return start_server(jobs, env={"RUNYARD_MAX_UPLOAD_MB": "2"})


def blobs(data_dir: Path) -> list[str]:
    """The stored uploads, and anything left being received."""
    root = data_dir / "uploads"
    kept = [p.name for p in root.iterdir() if p.is_file()] if root.exists() else []
    incoming = root / ".incoming"
    return sorted(kept + ([p.name for p in incoming.iterdir()] if incoming.exists() else []))


def lines_of(server, run_id: str) -> str:
    url = f"{server.url}/v1/runs/{run_id}/artifacts/outputs/lines.txt"
    return web.get(url).text.strip()


def test_a_run_and_its_file_in_one_request(server) -> None:
    resp = web.post(
        f"{server.url}/v1/runs", headers={"Prefer": "wait=60"}, timeout=90,
        data={"run": json.dumps({"job": "count", "params": {"note": "x"}})},
        files={"data": ("../../etc/table.csv", TABLE, "text/csv")},
    )  # fmt: skip
    assert resp.status_code == 200, resp.text
    run = resp.json()
    upload_id = hashlib.sha256(TABLE).hexdigest()
    assert run["state"] == "succeeded"
    # the part's filename, made a plain one, is the name the run gives the file
    assert run["params"] == {"data": f"upload:{upload_id}/table.csv", "note": "x"}
    assert lines_of(server, run["id"]) == "3"
    upload = web.get(f"{server.url}/v1/uploads/{upload_id}").json()
    assert upload["name"] == "table.csv"  # the path the client sent is metadata only
    assert upload["original_name"] == "../../etc/table.csv"
    assert web.get(f"{server.url}/v1/uploads/{upload_id}/content").content == TABLE


def test_curl_dash_f_as_the_docs_show(server, tmp_path: Path) -> None:
    # curl is part of the machine (the README's tour is curl): a missing one is a failure
    assert shutil.which("curl") is not None, "curl is needed: apt-get install curl"
    table = tmp_path / "t.csv"
    table.write_bytes(TABLE + b"5,6\n")
    out = subprocess.run(
        ["curl", "-sS", "-H", "Prefer: wait=60", "-F", 'run={"job": "count"}',
         "-F", f"data=@{table}", f"{server.url}/v1/runs"],
        capture_output=True, check=True, timeout=120,
    )  # fmt: skip
    run = json.loads(out.stdout)
    assert run["state"] == "succeeded", run
    assert lines_of(server, run["id"]) == "4"


def test_an_idempotent_multipart_submit_is_one_run(server) -> None:
    def send() -> httpx.Response:
        return web.post(
            f"{server.url}/v1/runs", headers={"Idempotency-Key": "mp-1"},
            data={"run": json.dumps({"job": "count"})}, files={"data": ("t.csv", TABLE)},
        )  # fmt: skip

    first, second = send(), send()
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize(
    ("data", "files", "status", "field"),
    [
        ({}, {"data": ("t.csv", TABLE)}, 422, "run"),
        ({"run": "{not json"}, {"data": ("t.csv", TABLE)}, 422, "run"),
        ({"run": json.dumps({"job": "count"}), "extra": "x"}, {"data": ("t.csv", TABLE)}, 422,
         "extra"),
        ({"run": json.dumps({"job": "nope"})}, {"data": ("t.csv", TABLE)}, 404, "job"),
        ({"run": json.dumps({"job": "count"})}, {"data": ("t.txt", b"\x00\x01binary")}, 422,
         "params.data"),
        ({"run": json.dumps({"job": "count"})}, {"data": ("t.csv", b"\x00\x01binary")}, 422,
         "params.data"),
        ({"run": json.dumps({"job": "count", "params": {"data": "x"}})},
         {"data": ("t.csv", TABLE)}, 422, "params.data"),
        ({"run": json.dumps({"job": "count"})}, {"data": ("big.csv", b"x" * (3 * 2**20))}, 413,
         None),
    ],
)  # fmt: skip
def test_a_refused_multipart_submit_keeps_none_of_its_files(
    server, data, files, status, field
) -> None:
    resp = web.post(f"{server.url}/v1/runs", data=data, files=files, timeout=60)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    if field is not None:
        named = body.get("field") or " ".join(e["field"] for e in body.get("errors", []))
        assert field in named or field in body["detail"], body
    assert blobs(server.data_dir) == []
    assert web.get(f"{server.url}/v1/runs").json()["runs"] == []


def test_a_multipart_body_cut_short_keeps_nothing(server) -> None:
    head = (b"--B\r\nContent-Disposition: form-data; name=\"run\"\r\n\r\n"
            b"{\"job\": \"count\"}\r\n--B\r\nContent-Disposition: form-data; "
            b"name=\"data\"; filename=\"t.csv\"\r\n\r\n" + b"1,2\n" * 100_000)  # fmt: skip
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /v1/runs HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: multipart/form-data; boundary=B\r\n"
                     b"Content-Length: 9000000\r\n\r\n" + head)  # fmt: skip
        wait_for(lambda: blobs(server.data_dir), what="the file to start streaming")
    wait_for(lambda: blobs(server.data_dir) == [], what="the partial file to go")
    # and one whose closing boundary never comes, sent whole
    resp = web.post(f"{server.url}/v1/runs", content=head,
                      headers={"Content-Type": "multipart/form-data; boundary=B"})  # fmt: skip
    assert resp.status_code == 400, resp.text
    assert "closing boundary" in resp.json()["detail"]
    assert blobs(server.data_dir) == []


def test_multipart_needs_the_submit_role_before_a_byte_is_read(start_server, tmp_path) -> None:
    tokens = tmp_path / "tokens.toml"
    reader = create_token(tokens, "reader", Role.READ)
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "count.toml").write_text(JOB)
    server = start_server(jobs, env={"RUNYARD_TOKENS_FILE": str(tokens)})
    for headers, status in (({}, 401), ({"Authorization": f"Bearer {reader}"}, 403)):
        resp = web.post(
            f"{server.url}/v1/runs", headers=headers,
            data={"run": json.dumps({"job": "count"})}, files={"data": ("t.csv", TABLE)},
        )  # fmt: skip
        assert resp.status_code == status, resp.text
    assert blobs(server.data_dir) == []


def test_a_zip_is_staged_as_sent_never_unpacked(start_server, tmp_path: Path) -> None:
    import io
    import zipfile

    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "listing.toml").write_text(
        'command = ["sh", "-c", "cd inputs && find . | sort"]\n'
        '[params.bundle]\ntype = "file"\naccept = [".zip"]\n'
    )
    server = start_server(jobs)
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as z:
        z.writestr("../../escape.txt", "out")  # a hostile member name: never extracted
        z.writestr("inside.txt", "in")
    resp = web.post(
        f"{server.url}/v1/runs", headers={"Prefer": "wait=60"}, timeout=90,
        data={"run": json.dumps({"job": "listing"})},
        files={"bundle": ("cases.zip", packed.getvalue())},
    )  # fmt: skip
    run = resp.json()
    assert run["state"] == "succeeded", run
    log = web.get(f"{server.url}/v1/runs/{run['id']}/logs").text.split()
    assert log == [".", "./bundle", "./bundle/cases.zip"]
    assert not list(tmp_path.rglob("escape.txt"))


def test_a_file_part_must_name_a_file_param(server) -> None:
    resp = web.post(
        f"{server.url}/v1/runs", data={"run": json.dumps({"job": "count"})},
        files={"data": ("t.csv", TABLE), "note": ("n.txt", b"not a file param")},
    )  # fmt: skip
    assert resp.status_code == 422, resp.text
    assert resp.json()["field"] == "params.note"
    assert blobs(server.data_dir) == []


@pytest.mark.parametrize(
    ("run", "field", "message"),
    [
        # a probe: the run's values were named as if sent bare (`params.note`, `job`), and a
        # lone surrogate made the whole part unreadable JSON, where a JSON submit names both
        ('{"job": "count", "params": {"note": 1e400}}', "body.run.params.note", "str"),
        ('{"job": "count", "params": {"note": "\\ud800"}}', "body.run.params.note", "unicode"),
        ('{"job": "count", "params": {"nope": 1}}', "body.run.params.nope", "not permitted"),
        ('{"job": "nope"}', "body.run.job", "not declared"),
    ],
)
def test_what_the_run_part_holds_is_named_within_it(
    server, run: str, field: str, message: str
) -> None:
    """A value of the run is named where it is (`body.run.params.note`), as a JSON submit
    names it in its body; a file param sent as a part is named by its part (above)."""
    resp = web.post(f"{server.url}/v1/runs", data={"run": run}, files={"data": ("t.csv", TABLE)})
    assert resp.status_code in (404, 422), resp.text
    assert [e["field"] for e in resp.json()["errors"]] == [field]
    assert message in resp.json()["errors"][0]["message"]
    assert blobs(server.data_dir) == []


@pytest.mark.parametrize("file_first", [False, True])
def test_a_part_over_its_params_max_mb_is_refused_naming_it(server, file_first: bool) -> None:
    """Before the run part, the file is checked once the job is known, after it is stored:
    the same 413, with its limit."""
    run = ("run", (None, json.dumps({"job": "count"}), "application/json"))
    data = ("data", ("t.csv", b"1,2\n" * 300_000))  # 1.2 MB for max_mb = 1
    parts = [data, run] if file_first else [run, data]
    resp = web.post(f"{server.url}/v1/runs", files=parts)
    assert resp.status_code == 413, resp.text
    assert resp.json()["field"] == "params.data"
    assert "max_mb" in resp.json()["detail"]
    assert resp.json()["limit_bytes"] == 2**20
    assert blobs(server.data_dir) == []


def test_a_failed_multipart_submit_never_takes_back_what_another_client_uploaded(
    server,
) -> None:
    part = b"--B\r\nContent-Disposition: form-data; name="
    head = (part + b'"data"; filename="t.csv"\r\n\r\n' + TABLE + b"\r\n"
            + part + b'"run"\r\n\r\n')  # fmt: skip
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /v1/runs HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: multipart/form-data; boundary=B\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n"
                     + f"{len(head):x}\r\n".encode() + head + b"\r\n")  # fmt: skip
        upload_id = hashlib.sha256(TABLE).hexdigest()
        kept = server.data_dir / "uploads" / upload_id
        wait_for(kept.exists, what="the multipart file to be kept")
        again = web.put(f"{server.url}/v1/uploads", content=TABLE)  # another client
        assert again.status_code == 200
        tail = b'{"job": "nope"}\r\n--B--\r\n'
        sock.sendall(f"{len(tail):x}\r\n".encode() + tail + b"\r\n0\r\n\r\n")
        answer = sock.recv(65536)
    assert b" 404 " in answer.split(b"\r\n", 1)[0]
    assert web.get(f"{server.url}/v1/uploads/{upload_id}").status_code == 200


def test_a_disk_failing_under_a_multipart_file_is_507_and_leaves_nothing(
    start_server, tmp_path: Path
) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "count.toml").write_text(JOB.replace("max_mb = 1\n", ""))
    server = start_server(jobs, env={"RUNYARD_FAILPOINTS": "upload=enospc"})
    resp = web.post(
        f"{server.url}/v1/runs", data={"run": json.dumps({"job": "count"})},
        files={"data": ("t.csv", b"1,2\n" * 400_000)},  # flushed while it streams
    )  # fmt: skip
    assert resp.status_code == 507, resp.text
    assert "could not be stored" in resp.json()["detail"]
    assert blobs(server.data_dir) == []


def test_a_submit_the_store_refuses_keeps_none_of_its_files(start_server, tmp_path) -> None:
    """Refused at the store's write (a full disk): the run's uploads were already marked as
    used by it, so its own new file was kept for a day, marked by a run that never existed."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "count.toml").write_text(JOB)
    server = start_server(jobs, env={"RUNYARD_FAILPOINTS": "none"})
    shared = web.put(f"{server.url}/v1/uploads", params={"name": "s.csv"}, content=TABLE)
    shared_id = shared.json()["id"]
    set_faults(server, "store_commit=enospc")
    form = {"data": {"run": json.dumps({"job": "count"})}, "files": {"data": ("t.csv", b"x\n")}}
    assert web.post(f"{server.url}/v1/runs", timeout=60, **form).status_code == 507
    batch = {"job": "count", "iterations": 3, "params": {"data": f"upload:{shared_id}"}}
    assert web.post(f"{server.url}/v1/batches", json=batch).status_code == 507
    set_faults(server, "")
    assert blobs(server.data_dir) == sorted([shared_id, f"{shared_id}.json"])
    refs = server.data_dir / "uploads" / ".refs"
    assert [p for p in refs.rglob("*") if p.is_file()] == []


def _form(filename: bytes, after: bytes = b"\r\n") -> bytes:
    return (b"--B\r\nContent-Disposition: form-data; name=\"run\"\r\n\r\n{\"job\": \"count\"}\r\n"
            b"--B\r\nContent-Disposition: form-data; name=\"data\"; filename=\"" + filename
            + b"\"\r\n\r\n" + TABLE + b"\r\n--B--" + after)  # fmt: skip


_DATA = b'Content-Disposition: form-data; name="data"; filename="t.csv"'


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        # a probe: the last name counted (the run), the other way round no run
        (b'name="run"', b'name="x"; name="run"', "gives 'name' twice"),
        (_DATA, _DATA + b'; filename="t.exe"', "gives 'filename' twice"),
        (_DATA, _DATA + b"; filename*=UTF-8''t.exe", "'filename*'"),
        (_DATA, _DATA + b"\r\nContent-Disposition: form-data; name=\"run\"", "header twice"),
        # a probe: base64 was stored as its text, under the client's name
        (_DATA, _DATA + b"\r\nContent-Transfer-Encoding: base64", "Content-Transfer-Encoding"),
        (_DATA, _DATA + b"\r\nContent-Encoding: gzip", "Content-Encoding"),
    ],
)  # fmt: skip
def test_a_part_whose_head_reads_two_ways_is_refused(
    server, old: bytes, new: bytes, words: str
) -> None:
    body = _form(b"t.csv").replace(old, new, 1)
    resp = web.post(f"{server.url}/v1/runs", content=body,
                    headers={"Content-Type": "multipart/form-data; boundary=B"})  # fmt: skip
    assert resp.status_code == 400, resp.text
    assert words in resp.json()["detail"], resp.json()
    assert blobs(server.data_dir) == []
    assert web.get(f"{server.url}/v1/runs").json()["runs"] == []
    # the same, said once and plainly, is taken; a quoted `;` is no parameter's end
    plain = _form(b"t;x.csv").replace(b"Content-Disposition", b"Content-Transfer-Encoding: "
                                      b"binary\r\nContent-Disposition", 1)  # fmt: skip
    resp = web.post(f"{server.url}/v1/runs", content=plain,
                    headers={"Content-Type": "multipart/form-data; boundary=B"})  # fmt: skip
    assert resp.status_code == 202, resp.text


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        (_form(b"t\x1b[31m.csv"), "multipart/form-data; boundary=B", 422, "U+001B"),
        # as PUT /v1/uploads?name= refuses it: it was kept with U+FFFD in its bytes' place
        (_form(b"\xff\xfe.csv"), "multipart/form-data; boundary=B", 422, "not UTF-8"),
        (_form(b"t.csv", b"\r\n" + b"x" * 5000), "multipart/form-data; boundary=B", 400,
         "after the closing boundary"),
        # said plainly (it was "Expected boundary character 45, got 116 at index 2")
        (b"a preamble\r\n" + _form(b"t.csv"), "multipart/form-data; boundary=B", 400,
         "it must begin with its first boundary (a preamble before it is not taken)"),
        # the run's JSON is read as a JSON body is (api/json_body.py): no key twice
        (_form(b"t.csv").replace(b'{"job": "count"}', b'{"job": "count", "job": "count"}'),
         "multipart/form-data; boundary=B", 422, "the part 'run': the key job is given twice"),
        # not multipart: the JSON submit's rules (api/json_body.py), the body cap among them
        (_form(b"t.csv"), "multipart/form-dataX; boundary=B", 415, "Content-Type"),
    ],
)  # fmt: skip
def test_a_form_with_bad_names_or_trailing_bytes_keeps_nothing(
    server, body: bytes, content_type: str, status: int, words: str
) -> None:
    resp = web.post(f"{server.url}/v1/runs", content=body,
                    headers={"Content-Type": content_type})  # fmt: skip
    assert resp.status_code == status, resp.text
    assert words in resp.json()["detail"], resp.json()
    assert blobs(server.data_dir) == []
    assert web.get(f"{server.url}/v1/runs").json()["runs"] == []


@pytest.mark.parametrize("name", [b"f\x00x", b"da\x1bta", b"../data", b"x" * 300])
def test_a_part_whose_name_is_no_param_name_is_refused_without_echoing_it(
    server, name: bytes
) -> None:
    """A NUL in a part's name came back raw in the problem's `field` (`params.f\\u0000x`)."""
    body = _form(b"t.csv").replace(b'name="data"', b'name="' + name + b'"')
    resp = web.post(f"{server.url}/v1/runs", content=body,
                    headers={"Content-Type": "multipart/form-data; boundary=B"})  # fmt: skip
    assert resp.status_code == 422, resp.text
    problem = resp.json()
    assert problem["field"] == "params"
    assert "a part's name is `run` or a file param's name" in problem["detail"]
    assert not any(ord(ch) < 0x20 for ch in resp.text)  # escaped, never as it came
    assert blobs(server.data_dir) == []
    assert web.get(f"{server.url}/v1/runs").json()["runs"] == []


def form(run: dict, boundary: str = "b0undary") -> bytes:
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="run"\r\n\r\n'
    data = f'--{boundary}\r\nContent-Disposition: form-data; name="data"; filename="t.csv"\r\n\r\n'
    body = part.encode() + json.dumps(run).encode() + b"\r\n" + data.encode() + TABLE
    return body + f"\r\n--{boundary}--\r\n".encode()


@pytest.mark.parametrize(
    ("headers", "status", "field"),
    [
        # a probe: each was taken (202), read as one of the ways its head could be read
        ([("Content-Type", "multipart/form-data; boundary=b0undary"),
          ("Content-Type", "application/json")], 415, "header.Content-Type"),
        ([("Content-Type", "multipart/form-data; boundary=other; boundary=b0undary")], 400, None),
        ([("Content-Type", "multipart/form-data; boundary=b0undary"),
          ("Content-Encoding", "gzip")], 415, "header.Content-Encoding"),
    ],
)  # fmt: skip
def test_a_form_whose_head_reads_two_ways_is_refused(
    server, headers: list[tuple[str, str]], status: int, field: str | None
) -> None:
    body = form({"job": "count"})
    resp = web.post(f"{server.url}/v1/runs", content=body, headers=headers)
    assert resp.status_code == status, resp.text
    assert resp.json().get("field") == field
    assert web.get(f"{server.url}/v1/runs").json()["runs"] == []
    assert blobs(server.data_dir) == []


def test_an_upload_in_a_content_coding_is_refused_not_stored_as_sent(server) -> None:
    """A probe: a gzipped upload was stored as its compressed bytes under the client's name."""
    packed = gzip.compress(TABLE)
    url = f"{server.url}/v1/uploads?name=t.csv"
    resp = web.put(url, content=packed, headers={"Content-Encoding": "gzip"})
    assert resp.status_code == 415, resp.text
    assert resp.json()["field"] == "header.Content-Encoding"
    assert blobs(server.data_dir) == []
    plain = web.put(url, content=TABLE, headers={"Content-Encoding": "identity"})
    assert plain.json()["id"] == hashlib.sha256(TABLE).hexdigest()
