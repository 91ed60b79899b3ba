"""File params (issue 18): a run names an upload, checked at submit against the param's limits,
staged read-only into its workspace before the program starts; `{NAME}` is the staged path."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tests import web

pytestmark = pytest.mark.e2e

JOB = """
command = ["sh", "-c", '''
    out="$RUNYARD_ARTIFACTS_DIR"
    wc -l < "$0" | tr -d ' ' > "$out/lines.txt"
    stat -c %a "$0" > "$out/mode.txt"
    cp "$RUNYARD_PARAMS_FILE" "$out/params.json"
    echo "$0" > "$out/path.txt"
''', "{data}"]
[params.data]
type = "file"
max_mb = 1
accept = [".csv"]
"""


TAMPER = """
command = ["sh", "-c", 'chmod u+w "$0" && echo TAMPERED >> "$0"', "{data}"]
[params.data]
type = "file"
"""

TEXT = """
command = ["echo", "{text}"]
[params.text]
type = "str"
"""


@pytest.fixture
def server(start_server, tmp_path: Path):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "count.toml").write_text(JOB)
    (jobs / "tamper.toml").write_text(TAMPER)
    (jobs / "text.toml").write_text(TEXT)
    return start_server(jobs)


def upload(server, body: bytes, name: str) -> str:
    resp = web.put(f"{server.url}/v1/uploads", params={"name": name}, content=body)
    assert resp.status_code in (200, 201), resp.text
    return str(resp.json()["id"])


def artifact(server, run_id: str, path: str) -> str:
    return web.get(f"{server.url}/v1/runs/{run_id}/artifacts/outputs/{path}").text


def test_a_run_reads_its_uploaded_file_staged_read_only(server) -> None:
    upload_id = upload(server, b"a,b\n1,2\n3,4\n", "table.csv")
    resp = web.post(f"{server.url}/v1/runs", headers={"Prefer": "wait=60"}, timeout=90,
                      json={"job": "count", "params": {"data": f"upload:{upload_id}"}})  # fmt: skip
    run = resp.json()
    assert run["state"] == "succeeded", run
    assert artifact(server, run["id"], "lines.txt").strip() == "3"
    assert artifact(server, run["id"], "mode.txt").strip() == "444"
    staged = artifact(server, run["id"], "path.txt").strip()
    assert staged.endswith(f"/runs/{run['id']}/workspace/inputs/data/table.csv")
    params = json.loads(artifact(server, run["id"], "params.json"))
    assert params["data"] == {"path": staged, "size": 12, "sha256": upload_id}


@pytest.mark.parametrize(
    ("value", "status", "words"),
    [
        ("upload:" + "0" * 64, 422, "no upload"),
        ("table.csv", 422, "data"),
    ],
)
def test_bad_file_values_are_refused_naming_the_param(server, value, status, words) -> None:
    resp = web.post(f"{server.url}/v1/runs", json={"job": "count", "params": {"data": value}})
    assert resp.status_code == status, resp.text
    assert words in resp.text and "data" in resp.text


def test_a_file_over_max_mb_or_of_another_kind_is_refused(server) -> None:
    big = upload(server, b"x\n" * (600 * 1024), "big.csv")  # 1.2 MB, over max_mb = 1
    resp = web.post(f"{server.url}/v1/runs",
                      json={"job": "count", "params": {"data": f"upload:{big}"}})  # fmt: skip
    assert resp.status_code == 413 and "max_mb" in resp.text and "data" in resp.text
    assert resp.json()["limit_bytes"] == 2**20  # as every size refusal says its limit
    text = upload(server, b"hello\n", "notes.txt")
    resp = web.post(f"{server.url}/v1/runs",
                      json={"job": "count", "params": {"data": f"upload:{text}"}})  # fmt: skip
    assert resp.status_code == 422 and ".csv" in resp.text
    assert web.get(f"{server.url}/v1/runs").json()["runs"] == []  # nothing was created


def test_a_batch_of_20_runs_shares_one_upload(server) -> None:
    upload_id = upload(server, b"h\n1\n", "one.csv")
    resp = web.post(f"{server.url}/v1/batches", json={
        "job": "count", "params": {"data": f"upload:{upload_id}"}, "iterations": 20,
    })  # fmt: skip
    assert resp.status_code == 202, resp.text
    batch_id = resp.json()["id"]

    def done() -> bool:
        return bool(web.get(f"{server.url}/v1/batches/{batch_id}").json()["done"])

    from tests.support import wait_for

    wait_for(done, timeout=60, what="the batch")
    counts = web.get(f"{server.url}/v1/batches/{batch_id}").json()["counts"]
    assert counts == {"succeeded": 20}
    blobs = [p for p in (server.data_dir / "uploads").iterdir() if p.is_file()]
    assert len([p for p in blobs if not p.name.endswith(".json")]) == 1  # stored once


def test_the_sdk_and_the_cli_upload_a_path_then_submit(server, tmp_path: Path) -> None:
    import subprocess
    import sys

    from runyard.client import Client

    table = tmp_path / "table.csv"
    table.write_text("a\nb\nc\nd\n")
    with Client(server.url, verify=web.TLS) as client:
        run = client.submit("count", {"data": table}, wait=60)  # a Path: uploaded first
    assert run.state == "succeeded"
    assert artifact(server, run.id, "lines.txt").strip() == "4"
    done = subprocess.run(  # curl's spelling: -p NAME=@FILE
        [sys.executable, "-m", "runyard", "run", "count", "-p", f"data=@{table}",
         "--server", server.url],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    blobs = [p for p in (server.data_dir / "uploads").iterdir() if p.suffix != ".json"]
    (blob,) = [p.name for p in blobs if p.is_file()]
    assert run.params["data"] == f"upload:{blob}/table.csv"  # the file under the path's name


def test_a_large_file_shows_upload_progress_on_a_terminal(start_server, tmp_path: Path) -> None:
    import os
    import pty
    import subprocess
    import sys

    from runyard.client import Client

    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "size.toml").write_text(
        'command = ["wc", "-c", "{data}"]\n[params.data]\ntype = "file"\n'
    )
    server = start_server(jobs)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(1024 * 1024) * 12)
    seen: list[int] = []
    with Client(server.url, verify=web.TLS) as client:
        upload = client.upload(big, progress=seen.append)  # the SDK reports what it sent
    assert sum(seen) == upload.size == 12 * 1024 * 1024
    primary, secondary = pty.openpty()  # the CLI on a terminal: a progress bar on stderr
    with subprocess.Popen(
        [sys.executable, "-m", "runyard", "submit", "size", "-p", f"data=@{big}",
         "--server", server.url],
        stdout=subprocess.PIPE, stderr=secondary, env={**os.environ, "TERM": "xterm"},
    ) as proc:  # fmt: skip
        os.close(secondary)
        shown = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal closed: the CLI is done
                break
            if not chunk:
                break
            shown += chunk
        run_id = proc.stdout.read().decode().strip() if proc.stdout else ""
        assert proc.wait(timeout=120) == 0
    os.close(primary)
    assert b"uploading big.bin" in shown
    assert web.get(f"{server.url}/v1/runs/{run_id}").json()["params"] == {
        "data": f"upload:{upload.id}/big.bin"
    }


def test_a_program_that_changes_its_input_never_changes_the_upload(server) -> None:
    body = b"a,b\n1,2\n"
    upload_id = upload(server, body, "t.csv")
    submit = {"job": "tamper", "params": {"data": f"upload:{upload_id}"}}
    resp = web.post(f"{server.url}/v1/runs", headers={"Prefer": "wait=60"}, timeout=90,
                      json=submit)  # fmt: skip
    assert resp.json().get("state") == "succeeded", resp.text  # root may write its own copy
    stored = web.get(f"{server.url}/v1/uploads/{upload_id}/content").content
    assert stored == body  # and the stored upload is what was sent, for every later run


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another user needs root")
def test_a_program_run_as_another_user_cannot_change_the_upload_it_reads(
    start_server, tmp_path: Path
) -> None:
    """A probe: its input is the stored upload itself (a hard link: it cannot change what it
    does not own), but the workspace's hand-over gave that file to the user too. Its program
    rewrote the upload: every later run read the new bytes, a download served them, and a
    re-upload of the original answered `200 already stored`."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "tamper.toml").write_text('run_as = "nobody"\n' + TAMPER)
    (jobs / "count.toml").write_text(JOB)
    server = start_server(jobs)
    body = b"a,b\n1,2\n"
    upload_id = upload(server, body, "t.csv")
    runs = f"{server.url}/v1/runs"
    tamper = {"job": "tamper", "params": {"data": f"upload:{upload_id}"}}
    ran = web.post(runs, headers={"Prefer": "wait=60"}, timeout=90, json=tamper).json()
    assert ran.get("state") == "failed", ran  # its chmod is refused: the file is not its own
    blob = server.data_dir / "uploads" / upload_id
    assert blob.read_bytes() == body and blob.stat().st_uid == 0
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == upload_id
    count = {"job": "count", "params": {"data": f"upload:{upload_id}"}}
    later = web.post(runs, headers={"Prefer": "wait=60"}, timeout=90, json=count).json()
    assert later["state"] == "succeeded", later
    assert artifact(server, later["id"], "lines.txt").strip() == "2"  # the bytes as sent


def test_a_swept_upload_that_is_missing_is_named_where_it_sits(server) -> None:
    """A probe: named `body.params.data`, with no element, where it was the sweep's second."""
    ok = upload(server, b"a,b\n", "t.csv")
    sweep = {"job": "count", "sweep": {"data": [f"upload:{ok}", "upload:" + "0" * 64]}}
    resp = web.post(f"{server.url}/v1/batches", json=sweep)
    assert resp.status_code == 422, resp.text
    assert (resp.json()["field"], resp.json()["element"]) == ("body.sweep.data.1", 1)
    assert web.get(f"{server.url}/v1/runs").json()["runs"] == []


def test_a_file_for_a_param_that_takes_none_is_refused_before_anything_is_sent(
    server, tmp_path: Path
) -> None:
    """A probe: `-p text=@FILE` on a str param uploaded the file and ran the program with
    `upload:ID` as its text, and succeeded."""
    import subprocess
    import sys

    from runyard.client import Client, ClientError

    note = tmp_path / "note.txt"
    note.write_text("hello\n")
    with Client(server.url, verify=web.TLS) as client, pytest.raises(ClientError) as refused:
        client.submit("text", {"text": note})
    assert "no file param 'text'" in str(refused.value)
    done = subprocess.run(
        [sys.executable, "-m", "runyard", "run", "text", "-p", f"text=@{note}",
         "--server", server.url],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode != 0 and "no file param 'text'" in done.stderr, done.stderr
    assert web.get(f"{server.url}/v1/runs", params={"job": "text"}).json()["runs"] == []
    assert not [p for p in (server.data_dir / "uploads").iterdir() if p.is_file()]  # no blob
    done = subprocess.run(  # @@: a text that starts with @
        [sys.executable, "-m", "runyard", "run", "text", "-p", "text=@@home", "--server",
         server.url], capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_the_same_bytes_sent_under_another_name_are_taken_by_the_name_a_run_gives_them(
    server, tmp_path: Path
) -> None:
    """A probe: bytes first uploaded as `notes.txt` were stored under that name, and the
    same bytes sent as `scores.csv` answered with it: a `.csv` param refused a valid CSV, and
    a run would have read it as notes.txt. The name belongs to the use (`upload:ID/NAME`)."""
    from runyard.client import Client

    body = b"a,b\n1,2\n3,4\n"
    first = web.put(f"{server.url}/v1/uploads", params={"name": "notes.txt"}, content=body)
    assert first.status_code == 201, first.text
    again = web.put(f"{server.url}/v1/uploads", params={"name": "../scores.csv"}, content=body)
    assert again.status_code == 200, again.text  # the same bytes, stored once
    upload_id = again.json()["id"]
    assert again.json()["name"] == "notes.txt"  # stored under the first name
    assert again.json()["ref"] == f"upload:{upload_id}/scores.csv"  # this request's, made safe
    stored = web.get(f"{server.url}/v1/uploads/{upload_id}").json()
    assert stored["ref"] == f"upload:{upload_id}/notes.txt"

    runs = f"{server.url}/v1/runs"
    refused = web.post(runs, json={"job": "count", "params": {"data": f"upload:{upload_id}"}})
    assert refused.status_code == 422, refused.text  # no name given: the stored one, a .txt
    assert "'notes.txt' is not a .csv file" in refused.json()["detail"]
    ran = web.post(
        runs, json={"job": "count", "params": {"data": again.json()["ref"]}},
        headers={"Prefer": "wait=60"}, timeout=90,
    )  # fmt: skip
    assert ran.status_code == 200, ran.text
    run = ran.json()
    assert run["state"] == "succeeded"
    staged = artifact(server, run["id"], "path.txt").strip()
    assert staged.endswith("/inputs/data/scores.csv")  # staged under the run's name for it
    told = json.loads(artifact(server, run["id"], "params.json"))["data"]
    assert told["path"] == staged and told["sha256"] == upload_id
    assert artifact(server, run["id"], "lines.txt").strip() == "3"

    long = "\u00e9" * 200 + ".csv"  # 204 characters, 404 bytes: over what a file system takes
    for bad, why in [("../x.csv", "pattern"), ("", "pattern"), ("a.csv\u200b", "plain"),
                     (long, "plain")]:  # fmt: skip
        wrong = web.post(
            runs, json={"job": "count", "params": {"data": f"upload:{upload_id}/{bad}"}}
        )
        assert wrong.status_code == 422, (bad, wrong.text)
        assert wrong.json()["errors"][0]["field"].endswith("params.data")
        assert why in wrong.text
    sdk_table = tmp_path / "sweep.csv"
    sdk_table.write_bytes(body)
    with Client(server.url, verify=web.TLS) as client:
        by_sdk = client.submit("count", {"data": sdk_table}, wait=60)  # a Path: uploaded first
    assert by_sdk.state == "succeeded"
    assert by_sdk.params["data"] == f"upload:{upload_id}/sweep.csv"
    assert artifact(server, by_sdk.id, "path.txt").strip().endswith("/inputs/data/sweep.csv")


def test_the_ref_an_upload_answers_is_always_one_a_submit_takes(server, tmp_path: Path) -> None:
    """A probe: `. x.csv` was stored as ` x.csv` (its dot went, then the space behind it
    stayed), and a long name cut on a space ended in one: the `ref` answered was refused by
    the param's own pattern, and a multipart submit, the CLI and the SDK failed with it."""
    from runyard.client import Client

    body = b"a,b\n1,2\n"
    for sent, kept in [
        (". x.csv", "x.csv"),
        ("a" * 250 + " " + "b" * 10 + ".csv", "a" * 250 + ".csv"),
    ]:
        resp = web.put(f"{server.url}/v1/uploads", params={"name": sent}, content=body)
        assert resp.status_code in (200, 201), resp.text
        assert resp.json()["ref"] == f"upload:{resp.json()['id']}/{kept}"
        ran = web.post(
            f"{server.url}/v1/runs", headers={"Prefer": "wait=60"}, timeout=90,
            json={"job": "count", "params": {"data": resp.json()["ref"]}},
        )  # fmt: skip
        assert ran.status_code == 200, ran.text
        assert artifact(server, ran.json()["id"], "path.txt").strip().endswith(f"/{kept}")
    form = web.post(
        f"{server.url}/v1/runs", headers={"Prefer": "wait=60"}, timeout=90,
        data={"run": json.dumps({"job": "count"})}, files={"data": (". y.csv", body)},
    )  # fmt: skip
    assert form.status_code == 200, form.text
    assert form.json()["params"]["data"].endswith("/y.csv")
    odd = tmp_path / ". z.csv"
    odd.write_bytes(body)
    with Client(server.url, verify=web.TLS) as client:
        assert client.submit("count", {"data": odd}, wait=60).state == "succeeded"
