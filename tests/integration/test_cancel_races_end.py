"""A cancel that races its run's own end: the run read as running, then moved on before the
store's flag (which is refused then). It was answered 202 with the run as read again, already
succeeded; a run queued again for a retry was answered 202 and not cancelled at all."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from runyard.models import Run
from tests.inprocess import FakedServer, faked
from tests.support import wait_for

JOBS = {
    "mark": 'command = ["true"]\n',
    "flaky": 'command = ["false"]\nmax_attempts = 3\nretry_on = [1]\n'
    "[backoff]\nbase_s = 30\njitter = 0\n",
}


def running(srv: FakedServer, job: str) -> str:
    run_id = str(srv.submit(job)["id"])
    wait_for(lambda: srv.launched() == [run_id], what="the run to start")
    return run_id


def ends_before_the_flag(srv: FakedServer, run_id: str, exit_code: int) -> list[str]:
    """The store's next `request_cancel` first lets the attempt end, and its end be recorded:
    the cancel has read the run as running, the flag finds it ended (or queued again)."""
    store = srv.runtime.runs.store
    flag = store.request_cancel
    raced: list[str] = []

    async def racing(rid: str) -> Run | None:
        store.request_cancel = flag  # type: ignore[method-assign]  # once
        await srv.executor.finish(run_id, 1, exit_code=exit_code)
        await srv.runtime.lifecycle._exits.wait()  # its end recorded
        ended = await store.get_run(rid)
        assert ended is not None
        raced.append(ended.state.value)
        return await flag(rid)

    store.request_cancel = racing  # type: ignore[method-assign]
    return raced


def test_a_cancel_of_a_run_that_ended_meanwhile_is_409_already_ended(
    tmp_path: Path, write_job: Callable[[str, str], Path], jobs_dir: Path
) -> None:
    for name, text in JOBS.items():
        write_job(name, text)
    with faked(tmp_path, jobs_dir) as srv:
        run_id = running(srv, "mark")
        raced = ends_before_the_flag(srv, run_id, exit_code=0)
        resp = srv.post(f"/v1/runs/{run_id}/cancel")
        assert raced == ["succeeded"]  # the race happened as staged
        assert resp.status_code == 409, resp.text
        problem = resp.json()
        assert problem["status"] == 409
        assert problem["detail"] == f"run {run_id} already ended as succeeded"
        run = srv.run(run_id)
        assert run["state"] == "succeeded" and not run["cancel_requested"]


def test_a_cancel_of_a_run_queued_again_meanwhile_cancels_it(
    tmp_path: Path, write_job: Callable[[str, str], Path], jobs_dir: Path
) -> None:
    for name, text in JOBS.items():
        write_job(name, text)
    with faked(tmp_path, jobs_dir) as srv:
        run_id = running(srv, "flaky")
        raced = ends_before_the_flag(srv, run_id, exit_code=1)
        resp = srv.post(f"/v1/runs/{run_id}/cancel")
        assert raced == ["queued"]  # its retry waits out its backoff
        assert resp.status_code == 202, resp.text
        assert resp.json()["state"] == "cancelled"
        srv.clock.advance(60)  # past the backoff: a retry still queued would start now
        srv.settle()
        assert srv.run(run_id)["state"] == "cancelled"
        assert srv.launched() == [run_id]  # its one attempt, no retry
