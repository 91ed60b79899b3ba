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
from tests.support import ServerProcess, wait_for

pytestmark = pytest.mark.e2e

Mounted = tuple[ServerProcess, str, Path]  # the server, the run's URL, the victim

SH = """
command = ["bash", "-c", "{script}"]
artifacts = ["**"]
[params.script]
type = "str"
"""
# the program bind-mounts the victim over DATA/runs/.deleting, from its workspace
TRASH_MOUNT = 'mkdir -p ../../.deleting && mount --bind {} "$(cd ../..; pwd)/.deleting"'


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


def ran(
    start_server: Callable[..., ServerProcess],
    write_job: Callable[[str, str], Path],
    jobs_dir: Path,
    script: str,
) -> tuple[ServerProcess, str, RunState]:
    """A server whose run of `script` (bash, in its workspace) has ended: the server, the
    run's URL and how it ended."""
    write_job("sh", SH)
    server = start_server(jobs_dir)
    with server.client() as c:
        run = c.submit("sh", params={"script": script})
        state = server.wait_run(c, run.id).state
    return server, f"{server.url}/v1/runs/{run.id}", state


@pytest.fixture
def mounted(
    start_server: Callable[..., ServerProcess],
    write_job: Callable[[str, str], Path],
    jobs_dir: Path,
    victim: Path,
) -> Mounted:
    """(server, run, victim): the run's program bind-mounted the victim at outputs/m."""
    script = f"mkdir -p outputs/m && echo own > outputs/ok.txt && mount --bind {victim} outputs/m"
    server, base, state = ran(start_server, write_job, jobs_dir, script)
    assert state is RunState.SUCCEEDED
    return server, base, victim


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
    script = f"echo own-log; mount --bind {victim}/keep.txt ../attempt-1.log"
    server, base, state = ran(start_server, write_job, jobs_dir, script)
    assert state is RunState.SUCCEEDED
    resp = web.get(f"{base}/logs")
    assert resp.status_code == 409, resp.text  # no plain file of the run's: said, not read
    assert "the attempt's log is not a plain file" in resp.json()["detail"]
    assert b"precious" not in resp.content
    assert web.delete(base).status_code == 204
    assert victim_intact(victim)
    assert mounts_under(server.data_dir) == []


def _victim_run_files(victim: Path) -> None:
    """What a victim mounted over a run's directory would show as the run's own."""
    (victim / "attempt-1.log").write_text("victim-log\n")
    (victim / "workspace" / "outputs").mkdir(parents=True)
    (victim / "workspace" / "outputs" / "victim.txt").write_text("victim-artifact\n")


def test_a_mount_over_the_runs_own_directory_serves_none_of_the_victim(
    start_server: Callable[..., ServerProcess],
    write_job: Callable[[str, str], Path],
    jobs_dir: Path,
    victim: Path,
) -> None:
    """A probe: mounted over DATA/runs/ID from its workspace, the victim's log and artifacts
    were served as the run's. Every check is anchored to DATA/runs as it was at start."""
    _victim_run_files(victim)
    script = f'echo own-log; echo own > own.txt; mount --bind {victim} "$(cd ..; pwd)"'
    server, base, _ = ran(start_server, write_job, jobs_dir, script)
    answers = [
        web.get(f"{base}/logs"),
        web.get(f"{base}/artifacts"),
        web.get(f"{base}/artifacts/outputs/victim.txt"),
        web.get(f"{base}/artifacts/own.txt"),
    ]
    for resp in answers:
        for mark in (b"victim-log", b"victim-artifact", b"precious"):
            assert mark not in resp.content, (resp.request.url, resp.content[:300])
    assert "outputs/victim.txt" not in answers[1].text  # the listing names none of it
    assert answers[2].status_code == 403
    assert "run_file_on_another_mount" in server.log_path.read_text()
    assert web.delete(base).status_code == 204  # the mount over it detached, its own removed
    assert victim_intact(victim)
    assert (victim / "workspace" / "outputs" / "victim.txt").read_text() == "victim-artifact\n"


def test_a_mount_over_the_trash_empties_nothing_of_the_victim(
    start_server: Callable[..., ServerProcess],
    write_job: Callable[[str, str], Path],
    jobs_dir: Path,
    victim: Path,
) -> None:
    """A probe: mounted over DATA/runs/.deleting, every delete failed (EXDEV, unexplained),
    and the trash pass after a restart emptied the victim."""
    server, base, state = ran(start_server, write_job, jobs_dir, TRASH_MOUNT.format(victim))
    assert state is RunState.SUCCEEDED
    trash = server.data_dir / "runs" / ".deleting"
    assert mounts_under(trash) == [str(trash.resolve())]
    assert web.delete(base).status_code == 204  # detached: root
    assert victim_intact(victim)
    assert mounts_under(trash) == []
    assert "trash_mount_detached" in server.log_path.read_text()


def _intact(victim: Path) -> bool:
    try:
        return victim_intact(victim)
    except FileNotFoundError:
        return False


def test_the_trash_pass_at_start_empties_nothing_of_a_mount_over_the_trash(
    start_server: Callable[..., ServerProcess],
    write_job: Callable[[str, str], Path],
    jobs_dir: Path,
    victim: Path,
) -> None:
    server, _, state = ran(start_server, write_job, jobs_dir, TRASH_MOUNT.format(victim))
    assert state is RunState.SUCCEEDED
    trash = server.data_dir / "runs" / ".deleting"
    server.stop()
    assert mounts_under(trash) == [str(trash.resolve())]
    server.start()  # its trash pass: the mount detached (root), nothing of the victim removed
    wait_for(
        lambda: mounts_under(trash) == [] or not _intact(victim),
        timeout=15,
        what="the trash pass",
    )
    assert victim_intact(victim)
