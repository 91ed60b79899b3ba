"""An artifact listing never leaves out a declared file in silence (an attacker's probe: a file
its program named with bytes that are not UTF-8 was missing from a listing that said
`partial: false`; one in a directory so named made the listing, and any page cursor that
crossed it, a 500). What cannot be served (a name no request path can carry, a link, a hard
link) is named among `skipped`, with the reason, and the page says it is partial."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from runyard.models import RunState
from tests import web
from tests.support import ServerProcess

pytestmark = pytest.mark.e2e

PROGRAM = r"""
import os
os.makedirs(b"outputs/\xfe", exist_ok=True)
for name in (b"outputs/a.txt", b"outputs/\xff.txt", b"outputs/\xfe/in.txt",
             b"outputs/new\nline.txt", b"outputs/back\\slash.txt", b"outputs/z.txt",
             b"outputs/hard"):
    with open(name, "wb") as f:
        f.write(b"x")
os.link(b"outputs/hard", b"outputs/hard2")
os.symlink(b"a.txt", b"outputs/link.txt")
with open(b"not-declared-\xff.txt", "wb") as f:  # outside the globs: no artifact at all
    f.write(b"x")
"""
SERVED = ["outputs/a.txt", "outputs/z.txt"]
SKIPPED = {
    "outputs/\\xff.txt": "its name is not UTF-8: no request path can name it",
    "outputs/\\xfe/in.txt": "its name is not UTF-8: no request path can name it",
    "outputs/new\nline.txt": "its name holds a control character: no request path can carry it",
    # listed as an artifact, it could never be fetched (its %5C is refused) nor downloaded
    "outputs/back\\slash.txt": (
        "its name holds a backslash: artifact paths are '/'-separated, none can name it"
    ),
    "outputs/hard": "a hard link: it could be a file from outside the workspace",
    "outputs/hard2": "a hard link: it could be a file from outside the workspace",
    "outputs/link.txt": "a symbolic link: links are never followed",
}


@pytest.fixture
def odd_names(start_server, write_job, jobs_dir: Path, tmp_path: Path) -> tuple[ServerProcess, str]:
    script = tmp_path / "names.py"
    script.write_text(PROGRAM)
    write_job("names", f'command = ["{sys.executable}", "{script}"]\nartifacts = ["outputs/**"]\n')
    server = start_server(jobs_dir)
    with server.client() as c:
        run = c.submit("names")
        assert server.wait_run(c, run.id).state is RunState.SUCCEEDED
    return server, run.id


def listing(server: ServerProcess, run_id: str, **params: Any) -> dict[str, Any]:
    resp = web.get(f"{server.url}/v1/runs/{run_id}/artifacts", params=params, timeout=30)
    assert resp.status_code == 200, resp.text
    page: dict[str, Any] = resp.json()
    return page


def test_files_that_cannot_be_served_are_named_as_skipped(odd_names) -> None:
    server, run_id = odd_names
    page = listing(server, run_id)
    assert [a["path"] for a in page["artifacts"]] == SERVED
    assert {s["path"]: s["reason"] for s in page["skipped"]} == SKIPPED
    assert page["partial"] is True
    assert page["next_cursor"] is None
    for path in SERVED:
        assert web.get(f"{server.url}/v1/runs/{run_id}/artifacts/{path}").content == b"x"


def test_pages_cross_names_that_are_not_utf8(odd_names) -> None:
    server, run_id = odd_names
    served, skipped, cursor = [], {}, None
    for _ in range(20):  # a page per entry at most, and a few directories
        page = listing(server, run_id, limit=1, **({"cursor": cursor} if cursor else {}))
        served += [a["path"] for a in page["artifacts"]]
        skipped.update({s["path"]: s["reason"] for s in page["skipped"]})
        assert page["partial"] is bool(page["skipped"])  # each page says what it left out
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert cursor is None
    assert served == SERVED  # no gap, no repeat
    assert skipped == SKIPPED
