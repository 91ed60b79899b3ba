"""A directory holding more entries than a listing reads of one (`artifact_walk_max`) is
named, with the bound and its setting, never left out in silence (a tester's finding: 120,000
files in outputs/many, 100,000 listed, every page `partial` with nothing in `skipped`, no
cursor reaching the rest; `runyard artifacts` printed the 100,000 and no warning, and
`download_all` reported success)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runyard.client_downloads import PartialListingError
from runyard.models import RunState
from tests import web
from tests.support import ServerProcess

pytestmark = pytest.mark.e2e

CAP = 100  # the least artifact_walk_max may be
FILES = CAP + 30
CROWDED = f"""
command = ["sh", "-c", '''
mkdir -p outputs/many
i=0
while [ $i -lt {FILES} ]; do echo x > outputs/many/f$(printf %03d $i); i=$((i + 1)); done
echo a > outputs/a.txt
''']
artifacts = ["outputs/**"]
"""


@pytest.fixture
def crowded(start_server, write_job, jobs_dir: Path) -> tuple[ServerProcess, str]:
    write_job("crowded", CROWDED)
    server = start_server(jobs_dir, env={"RUNYARD_ARTIFACT_WALK_MAX": str(CAP)})
    with server.client() as c:
        run = c.submit("crowded")
        assert server.wait_run(c, run.id).state is RunState.SUCCEEDED
    return server, run.id


def _pages(server: ServerProcess, run_id: str) -> list[dict[str, Any]]:
    pages: list[dict[str, Any]] = []
    cursor = None
    for _ in range(50):
        params = {"limit": 40} | ({"cursor": cursor} if cursor else {})
        resp = web.get(f"{server.url}/v1/runs/{run_id}/artifacts", params=params, timeout=30)
        assert resp.status_code == 200, resp.text
        pages.append(resp.json())
        cursor = pages[-1]["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError("the cursor never reached the end")


def _runyard(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runyard", *args, "--server", server.url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _said(stream: str) -> str:
    return " ".join(stream.split())  # as the console wrapped it


def test_each_page_names_the_directory_it_read_in_part(crowded) -> None:
    server, run_id = crowded
    pages = _pages(server, run_id)
    listed = [a["path"] for page in pages for a in page["artifacts"]]
    assert listed == sorted(set(listed), key=lambda p: p.split("/"))  # name order, no repeat
    assert "outputs/a.txt" in listed
    many = [p for p in listed if p.startswith("outputs/many/")]
    assert len(many) < FILES  # the walk stays bounded
    for page in pages:
        assert page["partial"] is bool(page["skipped"]), page  # partial, and why
        if any(a["path"].startswith("outputs/many/") for a in page["artifacts"]):
            reasons = {s["path"]: s["reason"] for s in page["skipped"]}
            assert f"more than {CAP} entries" in reasons["outputs/many"]
            assert "RUNYARD_ARTIFACT_WALK_MAX" in reasons["outputs/many"]
    # what the listing held back is there, served by name
    unlisted = next(f"outputs/many/f{i:03}" for i in range(FILES) if f"outputs/many/f{i:03}"
                    not in listed)  # fmt: skip
    assert web.get(f"{server.url}/v1/runs/{run_id}/artifacts/{unlisted}").content == b"x\n"


def test_the_cli_says_on_stderr_what_the_listing_left_out(crowded, tmp_path: Path) -> None:
    server, run_id = crowded
    listed = _runyard(server, "artifacts", run_id)
    assert listed.returncode == 0, listed.stderr
    assert "outputs/a.txt" in listed.stdout and "not listed" not in listed.stdout
    said = _said(listed.stderr)
    assert said.count("not listed: 'outputs/many': more than 100 entries") == 1, said
    assert "RUNYARD_ARTIFACT_WALK_MAX" in said
    assert "the listing is partial" in said

    downloaded = _runyard(server, "artifacts", run_id, "--download", str(tmp_path / "dl"))
    assert downloaded.returncode == 1, downloaded
    said = _said(downloaded.stderr)
    assert "not listed: 'outputs/many': more than 100 entries" in said
    assert "error: not every declared artifact was downloaded" in said
    assert "Traceback" not in said
    assert (tmp_path / "dl" / "outputs" / "a.txt").read_text() == "a\n"  # the rest is saved


def test_download_all_raises_once_every_listed_file_is_saved(crowded, tmp_path: Path) -> None:
    server, run_id = crowded
    folder = tmp_path / "dl"
    saved: list[Path] = []
    with server.client() as c, pytest.raises(PartialListingError) as caught:
        for dest in c.download_all(run_id, folder):
            saved.append(dest)
    assert folder / "outputs" / "a.txt" in saved
    assert sorted(saved) == sorted(p for p in folder.rglob("*") if p.is_file())
    named = dict(caught.value.left_out.named)
    assert [path for path, _ in named] == ["outputs/many"]
    assert "RUNYARD_ARTIFACT_WALK_MAX" in next(iter(named))[1]
    assert "not every declared artifact was downloaded" in str(caught.value)
