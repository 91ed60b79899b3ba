"""A launch that fails (no room for its workspace) whose end, back to the queue, cannot be
written either (the disk still full): the run goes back to the queue once the store takes
writes again, and the server is not ready meanwhile. It stayed running, its attempt starting
and its slot held, for good: the queue jammed behind it with every fault cleared, and
readiness 200 (a probe flipping ENOSPC on the workspace and the store)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from runyard import failpoints
from runyard.execution.base import Launch, ShortageError, Started
from tests.inprocess import faked
from tests.support import wait_for


def test_a_failed_launch_whose_end_is_unwritten_goes_back_to_the_queue(
    tmp_path: Path,
    write_job: Callable[[str, str], Path],
    jobs_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_job("talk", 'command = ["true"]\n')
    with faked(tmp_path, jobs_dir, capacity=1) as srv:
        executor = srv.executor
        plain = executor.launch

        async def full_disk(spec: Launch) -> Started | None:
            # the claim is written; the workspace, then the end that re-queues it, are not
            monkeypatch.setattr(failpoints, "_STATE", failpoints._Failpoints("store_commit=enospc"))
            raise ShortageError("cannot prepare the workspace: no space left on device")

        monkeypatch.setattr(executor, "launch", full_disk)
        stuck = srv.submit("talk")["id"]
        checks = wait_for(
            lambda: (
                (ready := srv.get("/health/ready")).status_code == 503
                and "reconcile" in ready.json()["checks"]
                and ready.json()["checks"]
            ),
            what="not ready, for the end not recorded",
        )
        assert stuck in checks["reconcile"], checks  # named, until a pass settles it
        assert srv.run(stuck)["state"] == "running"  # claimed, its end not written

        monkeypatch.setattr(failpoints, "_STATE", failpoints._Failpoints(None))  # room again
        monkeypatch.setattr(executor, "launch", plain)
        # the retry pass re-queues it, and the freed slot takes it again
        wait_for(lambda: srv.launched() == [stuck], what="the run launched again")
        attempts = srv.run(stuck)["attempts"]
        assert attempts[0]["outcome"] == "not_started", attempts  # back to the queue, unspent
        srv.finish(stuck, attempt=len(attempts))
        wait_for(lambda: srv.run(stuck)["state"] == "succeeded", what="the run to succeed")
        wait_for(lambda: srv.get("/health/ready").status_code == 200, what="ready again")
        other = srv.submit("talk")["id"]  # and the slot is free for the next
        wait_for(lambda: srv.launched() == [stuck, other], what="the next run launched")
