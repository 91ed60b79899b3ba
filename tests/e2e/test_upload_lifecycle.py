"""An upload's life (issue 18): kept while a run uses it, expired `upload_ttl_s` after nobody
does (a deleted run releases it), bounded by the server's quota (507), and what a crash left
half-received removed at start."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests import web
from tests.support import wait_for

pytestmark = pytest.mark.e2e

JOB = """
command = ["cat", "{data}"]
[params.data]
type = "file"
"""
KIB = 1024


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "read.toml").write_text(JOB)
    return folder


def upload(server, body: bytes, name: str = "f.bin") -> httpx.Response:
    return web.put(f"{server.url}/v1/uploads", params={"name": name}, content=body)


def exists(server, upload_id: str) -> bool:
    return web.get(f"{server.url}/v1/uploads/{upload_id}").status_code == 200


def test_an_unused_upload_expires_and_a_used_one_lives_as_long_as_its_run(
    start_server, jobs: Path
) -> None:
    server = start_server(jobs, env={"RUNYARD_UPLOAD_TTL_S": "1"})
    unused = upload(server, b"nobody reads me").json()["id"]
    used = upload(server, b"a run reads me").json()["id"]
    resp = web.post(f"{server.url}/v1/runs", headers={"Prefer": "wait=60"}, timeout=90,
                      json={"job": "read", "params": {"data": f"upload:{used}"}})  # fmt: skip
    run = resp.json()
    assert run["state"] == "succeeded", run
    wait_for(lambda: not exists(server, unused), what="the unused upload to expire")
    assert not (server.data_dir / "uploads" / unused).exists()
    # the used one outlived that sweep and the next ones: its run still stands
    assert exists(server, used)
    log = web.get(f"{server.url}/v1/runs/{run['id']}/logs").text
    assert "a run reads me" in log
    # the run deleted, nothing uses the upload any more: it expires in its turn
    assert web.delete(f"{server.url}/v1/runs/{run['id']}").status_code == 204
    wait_for(lambda: not exists(server, used), what="the released upload to expire")
    assert sorted(p.name for p in (server.data_dir / "uploads").iterdir()) == [".incoming", ".refs"]


def test_uploads_over_the_quota_are_refused_with_507(start_server, jobs: Path) -> None:
    server = start_server(jobs, env={"RUNYARD_MAX_UPLOADS_MB": "1"})
    first = upload(server, b"a" * 700 * KIB)
    assert first.status_code == 201
    over = upload(server, b"b" * 700 * KIB)
    assert over.status_code == 507, over.text
    assert over.headers["content-type"].startswith("application/problem+json")
    assert "max_uploads_mb" in over.json()["detail"]
    stored = sorted(p.name for p in (server.data_dir / "uploads").iterdir() if p.is_file())
    assert stored == sorted([first.json()["id"], f"{first.json()['id']}.json"])
    assert list((server.data_dir / "uploads" / ".incoming").iterdir()) == []
    # the same bytes again need no room: answered as stored
    assert upload(server, b"a" * 700 * KIB).status_code == 200
    # a file bigger than the whole quota is refused while it streams
    assert upload(server, b"c" * 2 * 1024 * KIB).status_code == 507


def test_what_a_crash_left_half_received_is_removed_at_start(start_server, tmp_path) -> None:
    data = tmp_path / "data"
    incoming = data / "uploads" / ".incoming"
    incoming.mkdir(parents=True)
    (incoming / "0123456789abcdef").write_bytes(b"half an upload")
    server = start_server(data_dir=data)
    wait_for(lambda: not any(incoming.iterdir()), what="the leftover to be removed")
    assert upload(server, b"whole").status_code == 201


def test_a_schedule_checks_its_files_and_keeps_them_while_it_stands(
    start_server, jobs: Path
) -> None:
    """A schedule naming no upload was accepted, and every run it fired failed to start; one
    naming an upload did not keep it: a day later (here a second) every fire failed."""
    server = start_server(jobs, env={"RUNYARD_UPLOAD_TTL_S": "1"})
    none = "a" * 64
    body = {"job": "read", "interval_s": 1, "params": {"data": f"upload:{none}"}}
    refused = web.post(f"{server.url}/v1/schedules", json=body)
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["field"] == "body.params.data"
    assert web.get(f"{server.url}/v1/schedules").json()["schedules"] == []
    kept = upload(server, b"a schedule reads me").json()["id"]
    unused = upload(server, b"nobody reads me").json()["id"]
    body["params"] = {"data": f"upload:{kept}"}
    made = web.post(f"{server.url}/v1/schedules", json=body)
    assert made.status_code == 201, made.text
    wait_for(lambda: not exists(server, unused), what="the unused upload to expire")
    # two seconds past its TTL, fired more than once: still there, and each run read it
    runs = wait_for(lambda: _ended_fired(server, 2), what="two fired runs ended")
    assert exists(server, kept)
    assert [r["state"] for r in runs] == ["succeeded", "succeeded"], runs
    assert "a schedule reads me" in web.get(f"{server.url}/v1/runs/{runs[0]['id']}/logs").text
    # the schedule and its runs gone, nothing names it: it expires in its turn
    assert web.delete(f"{server.url}/v1/schedules/{made.json()['id']}").status_code == 204
    for run in web.get(f"{server.url}/v1/runs").json()["runs"]:
        wait_for(lambda r=run: _deleted(server, r["id"]), what="each fired run deleted")
    wait_for(lambda: not exists(server, kept), what="the upload, named by nothing, to expire")


def _ended_fired(server, n: int) -> list[dict[str, object]] | None:
    runs = web.get(f"{server.url}/v1/runs").json()["runs"]
    ended = [r for r in runs if r["state"] not in ("queued", "running")]
    return ended[:n] if len(ended) >= n else None


def _deleted(server, run_id: str) -> bool:
    """Deleted once it has ended (a fire may still be running when the schedule goes)."""
    status = web.delete(f"{server.url}/v1/runs/{run_id}").status_code
    return status in (204, 404)


def test_an_operator_deletes_an_upload_nothing_needs_and_only_that(
    start_server, jobs: Path
) -> None:
    """Nothing deleted an upload before its TTL (a day): one that filled the disk held it."""
    server = start_server(jobs)
    unused = upload(server, b"x" * (64 * KIB)).json()["id"]
    used = upload(server, b"a run reads me").json()["id"]
    named = upload(server, b"a schedule names me").json()["id"]
    run = web.post(f"{server.url}/v1/runs", headers={"Prefer": "wait=60"}, timeout=90,
                   json={"job": "read", "params": {"data": f"upload:{used}"}}).json()  # fmt: skip
    assert run["state"] == "succeeded", run
    schedule = web.post(f"{server.url}/v1/schedules", json={
        "job": "read", "params": {"data": f"upload:{named}"}, "interval_s": 3600,
        "paused": True,
    }).json()  # fmt: skip

    with server.client() as c:
        c.delete_upload(unused)  # the Python client's way
    assert not exists(server, unused)
    assert not (server.data_dir / "uploads" / unused).exists()
    assert web.delete(f"{server.url}/v1/uploads/{unused}").status_code == 404

    in_use = web.delete(f"{server.url}/v1/uploads/{used}")
    assert in_use.status_code == 409, in_use.text
    assert run["id"] in in_use.json()["detail"]  # names who uses it
    assert exists(server, used)
    assert "a run reads me" in web.get(f"{server.url}/v1/runs/{run['id']}/logs").text
    pinned = web.delete(f"{server.url}/v1/uploads/{named}")
    assert pinned.status_code == 409 and "schedule" in pinned.json()["detail"]

    assert web.delete(f"{server.url}/v1/runs/{run['id']}").status_code == 204
    assert web.delete(f"{server.url}/v1/uploads/{used}").status_code == 204  # released
    assert web.delete(f"{server.url}/v1/schedules/{schedule['id']}").status_code == 204
    assert web.delete(f"{server.url}/v1/uploads/{named}").status_code == 204
    bad = web.delete(f"{server.url}/v1/uploads/..%2f..%2fetc")
    assert bad.status_code in {404, 422} and bad.headers["content-type"].startswith(
        "application/problem+json"
    )
    assert upload(server, b"x" * (64 * KIB)).status_code == 201  # the same bytes: new again


def test_a_schedule_made_as_its_upload_is_deleted_never_names_a_removed_upload(
    start_server, jobs: Path
) -> None:
    """A probe: a schedule created (or changed) at the moment its upload was deleted was
    stored naming it (201) while the delete removed it (204), and each of its fires failed.
    The check of a schedule's uploads and its save exclude the upload's removal: one of the
    two is refused, never both."""
    server = start_server(jobs)

    async def race(upload_id: str) -> tuple[int, int]:
        request = {"job": "read", "params": {"data": f"upload:{upload_id}"},
                   "interval_s": 3600, "paused": True}  # fmt: skip
        async with web.AsyncClient(timeout=30) as client:
            made, gone = await asyncio.gather(
                client.post(f"{server.url}/v1/schedules", json=request),
                client.delete(f"{server.url}/v1/uploads/{upload_id}"),
            )
        return made.status_code, gone.status_code

    outcomes = set()
    for i in range(40):
        upload_id = upload(server, b"round %d" % i).json()["id"]
        made, gone = asyncio.run(race(upload_id))
        outcomes.add((made, gone))
        assert (made, gone) in {(201, 409), (422, 204)}, (made, gone)
        assert (made == 201) == exists(server, upload_id)
    assert len(outcomes) >= 1


def test_a_fire_whose_upload_went_is_counted_on_its_schedule(start_server, jobs: Path) -> None:
    """An upload gone from under its schedule (removed by hand): each fire raised, logged a
    traceback, and the schedule showed nothing wrong (fail_count 0, no last_error)."""
    server = start_server(jobs)
    upload_id = upload(server, b"read me").json()["id"]
    made = web.post(f"{server.url}/v1/schedules", json={
        "job": "read", "params": {"data": f"upload:{upload_id}"}, "interval_s": 1})  # fmt: skip
    assert made.status_code == 201, made.text
    schedule = f"{server.url}/v1/schedules/{made.json()['id']}"
    for name in (upload_id, f"{upload_id}.json"):
        (server.data_dir / "uploads" / name).unlink()
    wait_for(lambda: web.get(schedule).json()["fail_count"] >= 1, what="a refused fire")
    said = web.get(schedule).json()
    assert upload_id in said["last_error"], said
    web.patch(schedule, json={"paused": True})
    assert "Traceback" not in server.log_path.read_text()


def test_a_submit_as_its_upload_is_deleted_is_answered_never_a_500(
    start_server, jobs: Path
) -> None:
    """A probe: a submit whose upload was deleted between its lookup and the read of its
    first bytes (a param with `accept` is sniffed) answered 500, a traceback logged, and the
    client's kept-alive connection closed. It is the 422 of an upload that is not there."""
    (jobs / "table.toml").write_text(
        'command = ["cat", "{t}"]\n[params.t]\ntype = "file"\naccept = [".csv"]\n'
    )
    server = start_server(jobs)

    async def race(upload_id: str) -> tuple[int, int]:
        request = {"job": "table", "params": {"t": f"upload:{upload_id}"}}
        async with web.AsyncClient(timeout=30) as client:
            made, gone = await asyncio.gather(
                client.post(f"{server.url}/v1/runs", json=request),
                client.delete(f"{server.url}/v1/uploads/{upload_id}"),
            )
        return made.status_code, gone.status_code

    for i in range(60):
        upload_id = upload(server, b"a,b\n%d,2\n" % i, "t.csv").json()["id"]
        made, gone = asyncio.run(race(upload_id))
        assert made in (202, 422) and gone in (204, 409), (made, gone)
    assert "Traceback" not in server.log_path.read_text()


def test_a_directory_where_an_uploads_file_belongs_gives_way_to_the_next_upload(
    start_server, jobs: Path
) -> None:
    """A probe: an upload's file replaced by a directory made every upload of those bytes a
    503 (`Is a directory`) for ever, though a client told to retry would retry."""
    server = start_server(jobs)
    upload_id = upload(server, b"the same bytes").json()["id"]
    blob = server.data_dir / "uploads" / upload_id
    blob.unlink()
    blob.mkdir()
    (blob / "inside").write_text("damage")
    again = upload(server, b"the same bytes")
    assert again.status_code in (200, 201), again.text
    content = web.get(f"{server.url}/v1/uploads/{upload_id}/content")
    assert content.content == b"the same bytes"
