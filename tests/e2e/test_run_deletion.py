"""Deleting a run is all or nothing: a delete the store refuses leaves the run's files where
they were; every removal, a request's or retention's, reaches the events feed."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from tests import web
from tests.e2e.test_failpoints import ARMED, set_faults
from tests.support import wait_for

pytestmark = pytest.mark.e2e

SAYS = 'command = ["sh", "-c", "echo hello; echo out > outputs/result.txt"]\n'


def test_a_delete_the_store_refuses_changes_nothing(start_server, write_job, jobs_dir) -> None:
    write_job("says", SAYS)
    server = start_server(jobs_dir, env=ARMED)
    with server.client() as c:
        run = server.wait_run(c, c.submit("says").id)
    files = server.data_dir / "runs" / run.id
    set_faults(server, "store_commit=enospc")
    resp = web.delete(f"{server.url}/v1/runs/{run.id}")
    assert resp.status_code == 507, resp.text
    assert "nothing was changed" in resp.json()["detail"]
    set_faults(server, "")
    # refused: the run, its log and its artifacts are all still there
    assert web.get(f"{server.url}/v1/runs/{run.id}").json()["state"] == "succeeded"
    assert web.get(f"{server.url}/v1/runs/{run.id}/logs").text == "hello\n"
    listed = web.get(f"{server.url}/v1/runs/{run.id}/artifacts").json()["artifacts"]
    assert [a["path"] for a in listed] == ["outputs/result.txt"]
    assert (files / "workspace" / "outputs" / "result.txt").read_text() == "out\n"
    # taken once the disk takes it: record and files gone, nothing left set aside
    assert web.delete(f"{server.url}/v1/runs/{run.id}").status_code == 204
    assert web.get(f"{server.url}/v1/runs/{run.id}").status_code == 404
    assert not files.exists()
    assert list((server.data_dir / "runs" / ".deleting").iterdir()) == []


def test_files_that_cannot_be_set_aside_keep_the_run(start_server, write_job, jobs_dir) -> None:
    write_job("says", SAYS)
    server = start_server(jobs_dir, env=ARMED)
    with server.client() as c:
        run = server.wait_run(c, c.submit("says").id)
    files = server.data_dir / "runs" / run.id
    for fault, status, slug in [("enospc", 507, "storage-full"), ("eio", 503, "files-remain")]:
        set_faults(server, f"removal={fault}")
        resp = web.delete(f"{server.url}/v1/runs/{run.id}")
        assert resp.status_code == status, resp.text
        problem = resp.json()
        assert problem["type"].endswith(slug) and "nothing was changed" in problem["detail"]
        assert web.get(f"{server.url}/v1/runs/{run.id}").json()["state"] == "succeeded"
        assert web.get(f"{server.url}/v1/runs/{run.id}/logs").text == "hello\n"
        assert (files / "workspace" / "outputs" / "result.txt").read_text() == "out\n"
    set_faults(server, "")
    assert web.delete(f"{server.url}/v1/runs/{run.id}").status_code == 204
    assert not files.exists()


def test_of_deletes_at_once_one_answers_204_and_the_rest_404(
    start_server, write_job, jobs_dir
) -> None:
    """Each delete that read the run before another took it answered 204 as well."""
    write_job("says", SAYS)
    server = start_server(jobs_dir)
    with server.client() as c:
        run = server.wait_run(c, c.submit("says").id)
    start = threading.Barrier(24)
    answers: list[int] = []

    def delete() -> None:
        start.wait()
        answers.append(web.delete(f"{server.url}/v1/runs/{run.id}", timeout=30).status_code)

    threads = [threading.Thread(target=delete) for _ in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [204] + [404] * 23
    assert not (server.data_dir / "runs" / run.id).exists()


def _feed(url: str, seen: list[tuple[str, object]], ready: threading.Event) -> None:
    """(event, data) of the feed until its first `deleted`."""
    event = ""
    with web.stream("GET", f"{url}/v1/events", timeout=30) as resp:
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
                ready.set()  # its `ready`: subscribed
            elif line.startswith("data:"):
                seen.append((event, json.loads(line[5:])))
                if event == "deleted":
                    return


def test_retention_tells_the_feed_what_it_removed(start_server, write_job, jobs_dir) -> None:
    write_job("brief", 'command = ["true"]\nretention_s = 1\n')
    server = start_server(jobs_dir, env={"RUNYARD_RETENTION_INTERVAL_S": "0.5"})
    seen: list[tuple[str, object]] = []
    ready = threading.Event()
    watcher = threading.Thread(target=_feed, args=(server.url, seen, ready), daemon=True)
    watcher.start()
    assert ready.wait(10)
    with server.client() as c:
        run = server.wait_run(c, c.submit("brief").id)
    wait_for(lambda: web.get(f"{server.url}/v1/runs/{run.id}").status_code == 404,
             timeout=15, what="the expired run removed")  # fmt: skip
    watcher.join(15)
    assert ("deleted", {"id": run.id}) in seen, seen


def test_leftovers_in_the_trash_are_removed_at_start(start_server, tmp_path: Path) -> None:
    """A delete whose files could not all go (or a crash mid-way) leaves them set aside,
    where nothing names them: the next retention pass, one at start, removes them."""
    data = tmp_path / "data"
    left = data / "runs" / ".deleting" / "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    (left / "workspace" / "deep").mkdir(parents=True)
    (left / "workspace" / "deep" / "file").write_text("x")
    start_server(data_dir=data)
    wait_for(lambda: not left.exists(), what="the trash emptied")
