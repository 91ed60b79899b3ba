"""Nothing blocking runs on the event loop: every route and the dispatch path, audited."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from runyard.models import RunState
from tests import web
from tests.support import EXAMPLE_JOBS, REPO, wait_for

pytestmark = pytest.mark.e2e


def test_no_blocking_io_on_the_event_loop(start_server, tmp_path: Path, jobs_dir: Path) -> None:
    guard = tmp_path / "loop-violations.txt"
    for job in EXAMPLE_JOBS.glob("*.toml"):
        shutil.copy(job, jobs_dir)
    (tmp_path / "programs").symlink_to(EXAMPLE_JOBS.parent / "programs")
    (jobs_dir / "agent.toml").write_text(
        (EXAMPLE_JOBS / "agent.toml").read_text().replace('"git:../.."', f'"git:{REPO}"')
    )
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "input.txt").write_text("x")
    (jobs_dir / "copier.toml").write_text(
        'command = ["cat", "input.txt"]\nworkspace = "copy:../src"\n'
    )
    server = start_server(
        jobs_dir,
        capacity=2,
        env={"RUNYARD_LOOP_GUARD_FILE": str(guard)},
        entry=[str(REPO / "tests" / "loop_guard.py")],
    )
    with server.client() as c:
        runs = [
            c.submit("simulate", {"ticks": 200}),
            c.submit("agent", {"task": "t"}),
            c.submit("copier"),
            c.submit("fail"),
            c.submit("sleeper", {"seconds": 60}),
            c.submit("sleeper", {"seconds": 60}),
        ]
        wait_for(lambda: c.run(runs[-2].id).state is not RunState.QUEUED, timeout=60, what="start")
        c.cancel(runs[-1].id)
        c.cancel(runs[-2].id)
        for run in runs:
            server.wait_run(c, run.id, timeout=60)
        c.jobs()
        c.runs(job="simulate")
        c.logs(runs[0].id)
        c.artifacts(runs[0].id)
        c.download(runs[0].id, "outputs/result.json", tmp_path / "r.json")
        # the streaming paths: a live stream of a running program, then replays
        live = c.submit("sleeper", {"seconds": 0.5})
        assert [type(i).__name__ for i in c.stream_log(live.id)][-1] == "StreamEnd"
        assert list(c.stream_log(runs[0].id))[-1].data["state"] == "succeeded"
        assert list(c.stream_events(runs[0].id))[-1].data["state"] == "succeeded"
        c.delete(runs[3].id)
        (jobs_dir / "late.toml").write_text('command = ["true"]\n')
        wait_for(lambda: web.get(f"{server.url}/v1/jobs/late").status_code == 200, what="rescan")
        assert web.get(f"{server.url}/health/ready").status_code == 200
        assert c.run(runs[1].id).state is RunState.SUCCEEDED
        assert c.run(runs[2].id).state is RunState.SUCCEEDED
    server.stop()
    violations = guard.read_text() if guard.exists() else ""
    assert violations == ""
