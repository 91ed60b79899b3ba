"""Upload files damaged behind the server's back (a probe): a FIFO for an upload's metadata
hung the start, or, while serving, held a thread of the pool per request until none was
left; metadata of the wrong types or nested past the reader stopped the start; a directory
in `.incoming` or a file in a `.refs` folder's place stopped every expiry sweep. Each is that
upload's alone: the server starts, the rest is served and still expires."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests import web
from tests.e2e.test_upload_lifecycle import exists, jobs, upload
from tests.support import wait_for

pytestmark = pytest.mark.e2e
__all__ = ["jobs"]  # the fixture, used by name


@pytest.mark.timeout(120)
def test_damaged_upload_files_are_that_uploads_alone(start_server, jobs: Path) -> None:
    server = start_server(jobs, env={"RUNYARD_UPLOAD_TTL_S": "600"})
    ids = [upload(server, f"{i}\n".encode() * (i + 1), f"u{i}.csv").json()["id"]
           for i in range(5)]  # fmt: skip
    fifo, typed, deep, marked, kept = ids
    server.stop()
    root = server.data_dir / "uploads"
    (root / f"{fifo}.json").unlink()
    os.mkfifo(root / f"{fifo}.json")
    meta = {"id": typed, "size": "12", "name": "a", "original_name": "a", "created_at": 1}
    (root / f"{typed}.json").write_text(json.dumps(meta))
    (root / f"{deep}.json").write_text("[" * 200_000 + "]" * 200_000)
    (root / ".incoming" / "left").mkdir()
    (root / ".refs" / marked).write_text("")  # a file where a folder of markers goes

    for sound in (kept, marked):  # last used now: they expire 10 s after, not at once
        os.utime(root / f"{sound}.json")
    server = start_server(jobs, data_dir=server.data_dir, env={"RUNYARD_UPLOAD_TTL_S": "10"})
    for damaged in (fifo, typed, deep):
        for _ in range(8):  # more than the thread pool holds: none may be kept waiting
            assert web.get(f"{server.url}/v1/uploads/{damaged}", timeout=10).status_code == 404
    assert exists(server, kept)
    # the sweep goes on past the entries it cannot remove: the sound uploads expire
    wait_for(lambda: not exists(server, kept) and not exists(server, marked), timeout=60,
             what="the unused uploads to expire")  # fmt: skip
    fresh = upload(server, b"x,y\n", "fresh.csv")
    assert fresh.status_code == 201, fresh.text
    assert "Traceback" not in server.log_path.read_text()


@pytest.mark.timeout(120)
def test_a_fifo_in_a_stored_uploads_place_fails_its_run_not_a_thread(
    start_server, jobs: Path
) -> None:
    """A probe (from the code): staging copied the stored upload with a plain open, and a FIFO
    put in its place after the run was submitted held a thread of the server's pool for ever."""
    (jobs / "nap.toml").write_text('command = ["sleep", "600"]\n')
    server = start_server(jobs, capacity=1)
    upload_id = upload(server, b"a,b\n", "t.csv").json()["id"]
    with server.client() as client:
        holder = client.submit("nap").id
        wait_for(lambda: client.run(holder).state.value == "running", what="the holder runs")
        queued = client.submit("read", {"data": f"upload:{upload_id}"}).id
        blob = server.data_dir / "uploads" / upload_id
        blob.unlink()
        os.mkfifo(blob)
        client.cancel(holder)  # the queued run launches: its input cannot be staged
        ended = server.wait_run(client, queued)
    assert ended.state.value == "failed", ended
    assert ended.reason is not None and "a FIFO" in ended.reason, ended.reason
