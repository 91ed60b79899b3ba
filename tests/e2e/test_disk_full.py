"""A real full disk: the data directory on a small tmpfs that a run fills (defect 3).

The supervisor must survive (its own log is on that disk too), the healthy run must keep its
real outcome, readiness must say the disk is full while it is, and once space is freed the
queue moves again with no restart and no run left `running` without a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runyard.errors import StorageFullError
from runyard.models import RunState
from runyard.services.diskspace import DiskGuard
from tests import web
from tests.support import processes_of, supervisors_of, wait_for
from tests.support import small_tmpfs as mounted_tmpfs

pytestmark = pytest.mark.e2e

GATED = """
command = ["sh", "-c", "while [ ! -e \\"$RUNYARD_WORKSPACE/go\\" ]; do sleep 0.02; done"]
"""
# dd stops at ENOSPC (exit code 1): the disk is full when it ends
FILLER = """
command = ["sh", "-c", "dd if=/dev/zero of=\\"$RUNYARD_WORKSPACE/fill\\" bs=64k 2>/dev/null"]
"""
TRUE = 'command = ["true"]\nartifacts = []\n'


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs; requested before start_server, so it is unmounted after the server and
    every process of its runs are gone."""
    with mounted_tmpfs(tmp_path / "small", "8m") as mnt:
        yield mnt


def test_full_disk_keeps_the_supervisor_and_the_queue_moves_once_freed(
    small_tmpfs: Path, start_server, write_job, jobs_dir: Path
) -> None:
    write_job("gated", GATED)
    write_job("filler", FILLER)
    write_job("true", TRUE)
    data = small_tmpfs / "data"
    server = start_server(jobs_dir, data_dir=data, env={"RUNYARD_MIN_FREE_MB": "1"})
    ready = f"{server.url}/health/ready"
    with server.client() as c:
        healthy = c.submit("gated").id
        wait_for(lambda: processes_of(data), what="the healthy run's program")
        (sup,) = supervisors_of(data)
        filler = c.submit("filler").id
        fill = data / "runs" / filler / "workspace" / "fill"
        wait_for(lambda: fill.exists() and len(processes_of(data)) == 1, what="the disk to fill")
        (data / "runs" / healthy / "workspace" / "go").touch()  # the healthy run ends now
        wait_for(lambda: not processes_of(data), what="the healthy run's program to end")

        # full: readiness says so, submissions are refused, reads work, the supervisor lives
        wait_for(lambda: "data_dir" in web.get(ready).json()["checks"], what="not ready")
        assert web.get(ready).status_code == 503
        assert web.post(f"{server.url}/v1/runs", json={"job": "true"}).status_code == 507
        batch = web.post(f"{server.url}/v1/batches", json={"job": "true", "iterations": 3})
        assert batch.status_code == 507, batch.text  # and nothing of it is stored
        assert batch.headers["content-type"] == "application/problem+json"
        assert c.runs(job="true").runs == []
        assert c.run(healthy).id == healthy
        assert supervisors_of(data) == [sup]

        fill.unlink()  # space is freed
        wait_for(lambda: web.get(ready).status_code == 200, what="ready again", timeout=30)
        done = server.wait_run(c, healthy)
        assert done.state is RunState.SUCCEEDED, done.reason  # its real outcome, not lost
        assert c.run(filler).state is RunState.FAILED
        assert supervisors_of(data) == [sup]  # it never died
        after = server.wait_run(c, c.submit("true").id)
        assert after.state is RunState.SUCCEEDED
        assert c.runs(state="running").runs == []


def test_a_refusal_for_a_full_disk_ends_as_soon_as_space_is_freed(small_tmpfs: Path) -> None:
    """The guard keeps a good answer for a while, never a refusal: the first submission after
    space is freed is taken, however soon (its ttl here is an hour)."""
    guard = DiskGuard(small_tmpfs, min_free_bytes=2 * 2**20, ttl_s=3600)
    asyncio.run(guard.check())  # 8 MiB free: taken, and that answer kept
    fill = small_tmpfs / "fill"
    fill.write_bytes(b"\0" * (7 * 2**20))
    asyncio.run(guard.check())  # within the hour, the good answer holds: no look
    guard._checked_at = float("-inf")  # the hour is over
    with pytest.raises(StorageFullError):
        asyncio.run(guard.check())
    fill.unlink()
    asyncio.run(guard.check())  # at once, not an hour later


def test_refused_checks_made_at_once_share_one_look(
    small_tmpfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Short of room every check looks again, but not once per caller of a flood: those that
    come while a look is under way wait for it (and one that leaves does not end it)."""
    (small_tmpfs / "fill").write_bytes(b"\0" * (7 * 2**20))
    looks = []
    real = shutil.disk_usage

    def counted(path: Any) -> Any:  # the real statvfs, counted
        looks.append(path)
        return real(path)

    monkeypatch.setattr(shutil, "disk_usage", counted)
    guard = DiskGuard(small_tmpfs, min_free_bytes=2 * 2**20)

    async def flood() -> list[BaseException | None]:
        leaving = asyncio.ensure_future(guard.check())
        checks = [asyncio.ensure_future(guard.check()) for _ in range(20)]
        await asyncio.sleep(0)
        leaving.cancel()
        return await asyncio.gather(*checks, return_exceptions=True)

    results = asyncio.run(flood())
    assert all(isinstance(r, StorageFullError) for r in results)
    assert len(looks) == 1
    asyncio.run(flood())  # a later flood looks again: a refusal is never kept
    assert len(looks) == 2


def test_a_server_started_on_a_full_disk_says_so_in_one_line(small_tmpfs: Path) -> None:
    """Too full for the database's own files: it used to stop in the store's first pragma
    with some 90 lines of traceback (status 3); it refuses to start, naming the disk."""
    data = small_tmpfs / "data"
    data.mkdir()
    junk = small_tmpfs / "junk"
    with junk.open("wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:  # until ENOSPC
            fh.write(b"\0" * 65536)
    argv = [sys.executable, "-m", "runyard", "serve", "--data-dir", str(data), "--port", "0"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "refusing to start" in done.stderr
    assert "is full (No space left on device)" in done.stderr
    assert "Traceback" not in done.stderr


def test_readiness_names_the_disk_while_free_space_is_under_min_free_mb(
    small_tmpfs: Path, start_server, write_job, jobs_dir: Path
) -> None:
    """Submissions are refused (507) under min_free_mb: readiness said 200 meanwhile, so a
    balancer kept sending them."""
    write_job("true", TRUE)
    server = start_server(jobs_dir, data_dir=small_tmpfs / "data", env={"RUNYARD_MIN_FREE_MB": "4"})
    ready = f"{server.url}/health/ready"
    junk = small_tmpfs / "junk"
    junk.write_bytes(b"\0" * (5 * 2**20))  # about 2 MiB of the 8 left
    wait_for(lambda: "disk" in web.get(ready).json()["checks"], what="readiness to name the disk")
    assert "min_free_mb" in web.get(ready).json()["checks"]["disk"]
    assert web.post(f"{server.url}/v1/runs", json={"job": "true"}).status_code == 507
    junk.unlink()
    wait_for(lambda: web.get(ready).status_code == 200, what="ready again", timeout=30)
    assert web.post(f"{server.url}/v1/runs", json={"job": "true"}).status_code == 202


@pytest.fixture
def roomier_tmpfs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "roomier", "16m") as mnt:
        yield mnt


def test_an_upload_never_takes_the_reserve_the_runs_need(
    roomier_tmpfs: Path, start_server, write_job, jobs_dir: Path
) -> None:
    """One upload of the disk's free space was taken (201) down to its last 4 KiB, under
    min_free_mb: the ends of the runs going on could not be written, nor the lease renewed,
    and nothing could delete the upload for a day."""
    write_job("gated", GATED)
    data = roomier_tmpfs / "data"
    server = start_server(jobs_dir, data_dir=data, env={"RUNYARD_MIN_FREE_MB": "4"})
    url = f"{server.url}/v1/uploads"
    with server.client() as c:
        going = c.submit("gated").id
        wait_for(lambda: processes_of(data), what="the gated run's program")
        free = shutil.disk_usage(roomier_tmpfs).free
        big = b"x" * (free - 2 * 2**20)  # would leave 2 MiB: under the 4 MiB reserve
        announced = web.put(url, params={"name": "big.bin"}, content=big)
        assert announced.status_code == 507, announced.text  # refused before it was read
        assert "min_free_mb" in announced.json()["detail"]

        def chunked() -> Iterator[bytes]:  # no length announced: refused as it streams
            for i in range(0, len(big), 2**20):
                yield big[i : i + 2**20]

        streamed = web.put(url, params={"name": "big.bin"}, content=chunked())
        assert streamed.status_code == 507, streamed.text
        assert shutil.disk_usage(roomier_tmpfs).free > 4 * 2**20  # the reserve is whole
        leftovers = [p for p in (data / "uploads").rglob("*") if p.is_file()]
        assert leftovers == []  # nothing of either was kept
        small = web.put(url, params={"name": "small.bin"}, content=b"y" * 2**20)
        assert small.status_code == 201, small.text  # what fits is taken
        (data / "runs" / going / "workspace" / "go").touch()
        assert server.wait_run(c, going).state is RunState.SUCCEEDED  # its end was written
    assert web.get(f"{server.url}/health/ready").status_code == 200


BLOB = 'command = ["true"]\n[params.blob]\ntype = "str"\nmax_length = 10000\n'


def test_a_batch_the_disk_refuses_gives_the_disk_back(
    roomier_tmpfs: Path, start_server, write_job, jobs_dir: Path
) -> None:
    """Refused (507, nothing stored), it left the database's WAL holding what it had written,
    the disk full, and every submission after it refused until a restart (a probe)."""
    write_job("blob", BLOB)
    data = roomier_tmpfs / "data"
    server = start_server(jobs_dir, data_dir=data, env={"RUNYARD_MIN_FREE_MB": "2"})
    before = shutil.disk_usage(roomier_tmpfs).free
    big = {"job": "blob", "params": {"blob": "z" * 6000}, "iterations": 10_000}
    resp = web.post(f"{server.url}/v1/batches", json=big, timeout=60)
    assert resp.status_code == 507, resp.text
    assert web.get(f"{server.url}/v1/batches").json()["batches"] == []
    assert shutil.disk_usage(roomier_tmpfs).free > before - 2**20  # given back at once
    one = {"job": "blob", "params": {"blob": "z"}}
    assert web.post(f"{server.url}/v1/runs", json=one).status_code == 202


def test_a_schedule_fires_no_run_the_disk_reserve_refuses(
    start_server, write_job, jobs_dir: Path
) -> None:
    """A probe: with submissions refused under min_free_mb (507), a schedule went on making
    runs every second, and on a small disk its runs' writes then filled it. A fire is
    admitted as a submission is: under the reserve it makes no run, counted and said on the
    schedule (`fail_count`, `last_error`), and logged once."""
    write_job("true", TRUE)
    # never enough room: not ready (the disk), but up
    server = start_server(jobs_dir, env={"RUNYARD_MIN_FREE_MB": str(2**40)}, health="/health/live")
    assert web.post(f"{server.url}/v1/runs", json={"job": "true"}).status_code == 507
    made = web.post(
        f"{server.url}/v1/schedules", json={"job": "true", "interval_s": 1, "overlap": "allow"}
    )
    assert made.status_code == 201, made.text
    url = f"{server.url}/v1/schedules/{made.json()['id']}"
    wait_for(lambda: web.get(url).json()["fail_count"] >= 2, what="two fires refused")
    s = web.get(url).json()
    assert (s["fire_count"], s["skip_count"]) == (0, 0)
    assert "min_free_mb" in s["last_error"], s
    assert web.get(f"{server.url}/v1/runs").json()["runs"] == []
    refused = [line for line in server.log_path.read_text().splitlines()
               if "schedule_fire_refused" in line]  # fmt: skip
    assert len(refused) == 1 and "min_free_mb" in refused[0]
