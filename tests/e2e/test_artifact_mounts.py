"""A run whose program (root, no sandbox) leaves a mount point in its workspace: the server
neither lists, serves nor deletes what is mounted there (a probe: a bind mount of a host
directory was listed, served, and emptied by DELETE; one of / served /etc/shadow)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runyard.models import RunState
from tests import web
from tests.mounting import (
    OTHER_FILE_SYSTEM,
    mounts_under,
    mounts_undone,
    victim_intact,
    victim_tree,
)
from tests.support import ServerProcess

pytestmark = pytest.mark.e2e

Mounted = tuple[ServerProcess, str, Path]  # the server, the run's URL, the victim

SH = """
command = ["bash", "-c", "{script}"]
artifacts = ["**"]
[params.script]
type = "str"
"""


@pytest.fixture(params=["same file system", "another file system"])
def victim(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A directory outside the run: beside the data directory (a bind mount of it keeps its
    st_dev: only the mount ID tells it), or on another file system."""
    where = tmp_path / "victim"
    if request.param == "another file system":
        if not OTHER_FILE_SYSTEM.is_dir() or (
            OTHER_FILE_SYSTEM.stat().st_dev == tmp_path.stat().st_dev
        ):
            pytest.skip(f"{OTHER_FILE_SYSTEM} is not another file system here")
        where = OTHER_FILE_SYSTEM / f"runyard-test-victim-{tmp_path.name}"
    with mounts_undone(tmp_path):  # every mount under tmp_path detached after the test
        try:
            yield victim_tree(where)
        finally:
            if where.is_relative_to(OTHER_FILE_SYSTEM):
                shutil.rmtree(where, ignore_errors=True)  # the source: no mount is under it


@pytest.fixture
def mounted(
    start_server: Callable[..., ServerProcess],
    write_job: Callable[[str, str], Path],
    jobs_dir: Path,
    victim: Path,
) -> Mounted:
    """(server, run, victim): the run's program bind-mounted the victim at outputs/m."""
    write_job("sh", SH)
    server = start_server(jobs_dir)
    script = f"mkdir -p outputs/m && echo own > outputs/ok.txt && mount --bind {victim} outputs/m"
    with server.client() as c:
        run = c.submit("sh", params={"script": script})
        assert server.wait_run(c, run.id).state is RunState.SUCCEEDED
    return server, f"{server.url}/v1/runs/{run.id}", victim


def test_the_listing_names_the_mount_point_and_nothing_under_it(
    mounted: tuple[ServerProcess, str, Path],
) -> None:
    _, base, _ = mounted
    body = web.get(f"{base}/artifacts").json()
    assert sorted(a["path"] for a in body["artifacts"]) == ["outputs/ok.txt", "params.json"]
    assert [(s["path"], s["reason"].split(":")[0]) for s in body["skipped"]] == [
        ("outputs/m", "a mount point")
    ]
    assert body["partial"] is True
    assert body["workspace_bytes"] < 1 << 20  # the victim's files are not counted


def test_no_file_under_the_mount_point_is_served(mounted: Mounted) -> None:
    _, base, _ = mounted
    for path in ["outputs/m/keep.txt", "outputs/m/sub/deep.txt"]:
        resp = web.get(f"{base}/artifacts/{path}")
        assert resp.status_code == 403, (path, resp.status_code)
        assert resp.headers["content-type"] == "application/problem+json"
        assert "mount point" in resp.json()["detail"]
        assert b"precious" not in resp.content and b"hidden-deep" not in resp.content
    assert web.get(f"{base}/artifacts/outputs/ok.txt").content == b"own\n"


def test_deleting_the_run_detaches_the_mount_and_leaves_the_victim(
    mounted: tuple[ServerProcess, str, Path],
) -> None:
    server, base, victim = mounted
    assert web.delete(base).status_code == 204
    assert web.get(base).status_code == 404
    assert victim_intact(victim)
    runs = server.data_dir / "runs"
    assert mounts_under(runs) == []  # detached: the server runs as root
    assert [p.name for p in runs.iterdir()] == [".deleting"]
    assert list((runs / ".deleting").iterdir()) == []
    assert "run_mounts_detached" in server.log_path.read_text()


def test_a_file_mounted_over_the_runs_log_is_not_served(
    start_server: Callable[..., ServerProcess],
    write_job: Callable[[str, str], Path],
    jobs_dir: Path,
    victim: Path,
) -> None:
    """The log is the run's own file beside its workspace: a file mounted over it is not."""
    write_job("sh", SH)
    server = start_server(jobs_dir)
    script = f"echo own-log; mount --bind {victim}/keep.txt ../attempt-1.log"
    with server.client() as c:
        run = c.submit("sh", params={"script": script})
        assert server.wait_run(c, run.id).state is RunState.SUCCEEDED
    base = f"{server.url}/v1/runs/{run.id}"
    resp = web.get(f"{base}/logs")
    assert resp.status_code == 200
    assert b"precious" not in resp.content
    assert web.delete(base).status_code == 204
    assert victim_intact(victim)
    assert mounts_under(server.data_dir) == []
