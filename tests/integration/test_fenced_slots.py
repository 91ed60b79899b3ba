"""An attempt this server holds (its slot, its claim) and another server ended — reaped while
this one could not reach the store — is over here too: its slot comes back once its end is
heard or retried, whether this server claimed it or adopted it at start. A slot held for such
an attempt left the server at capacity for good, claiming nothing, and ready all the same
(found with a PostgreSQL down for longer than a lease)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from runyard import failpoints
from runyard.models import AttemptEnd, AttemptState, RunState
from tests.inprocess import FakedServer, faked
from tests.support import wait_for

REAPED = AttemptEnd(
    attempt_state=AttemptState.LOST, ended_at=2500.0, run_state=RunState.FAILED,
    reason="lost: its server stopped renewing its lease", outcome="lost",
)  # fmt: skip


def reaped_elsewhere(srv: FakedServer, run_id: str) -> None:
    assert srv.call(srv.runtime.store.end_attempt(run_id, 1, REAPED, by="there")) is not None


def test_an_end_not_recorded_then_reaped_elsewhere_gives_its_slot_back(
    tmp_path: Path,
    write_job: Callable[[str, str], Path],
    jobs_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_job("talk", 'command = ["true"]\n')
    with faked(tmp_path, jobs_dir, capacity=1) as srv:
        first = srv.submit("talk")["id"]
        wait_for(lambda: srv.run(first)["state"] == "running", what="the first run to start")
        monkeypatch.setattr(failpoints, "_STATE", failpoints._Failpoints("store_commit=enospc"))
        srv.finish(first)  # its end is told, and the store cannot take it
        wait_for(lambda: srv.runtime.attempts.unrecorded, what="the end kept, not recorded")
        monkeypatch.setattr(failpoints, "_STATE", failpoints._Failpoints(None))
        reaped_elsewhere(srv, first)  # meanwhile its lease lapsed, and another server reaped it
        second = srv.submit("talk")["id"]
        wait_for(lambda: srv.launched() == [first, second], what="the slot to be free again")
        assert not srv.runtime.attempts.unrecorded
        # ready again (its snapshot taken after the pass that released the slot)
        wait_for(lambda: srv.get("/health/ready").status_code == 200, what="ready again")
        assert srv.run(first)["state"] == "failed"  # as the reaper recorded it


def test_an_adopted_attempt_reaped_elsewhere_gives_its_slot_back_when_it_ends(
    tmp_path: Path, write_job: Callable[[str, str], Path], jobs_dir: Path
) -> None:
    write_job("talk", 'command = ["true"]\n')
    with faked(tmp_path, jobs_dir, capacity=1) as srv:
        first = srv.submit("talk")["id"]
        wait_for(lambda: srv.run(first)["state"] == "running", what="the first run to start")
        attempts = srv.runtime.attempts
        # as after a restart: the slot counted from the store, no claim of this server's own
        del attempts._claimed[first]
        reaped_elsewhere(srv, first)
        srv.finish(first)  # its program, fenced here, ends
        second = srv.submit("talk")["id"]
        wait_for(lambda: srv.launched() == [first, second], what="the slot to be free again")


def test_a_cancel_re_check_the_store_cannot_answer_yet_is_retried_until_it_can(
    tmp_path: Path,
    write_job: Callable[[str, str], Path],
    jobs_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cluster's listener came back before the store's pool did (PostgreSQL restarting):
    the re-check of cancels said meanwhile failed once, and was dropped: a cancel accepted by
    another server while this one did not hear was never carried out."""
    write_job("talk", 'command = ["true"]\n')
    with faked(tmp_path, jobs_dir) as srv:
        run_id = srv.submit("talk")["id"]
        wait_for(lambda: srv.run(run_id)["state"] == "running", what="the run to start")
        store = srv.runtime.store
        assert srv.call(store.request_cancel(run_id)) is not None  # accepted elsewhere, unheard
        real_get_run, failures = store.get_run, [1]

        async def get_run_once_away(rid: str) -> object:
            if failures:
                failures.pop()
                raise OSError("connection refused (the pool is not back yet)")
            return await real_get_run(rid)

        monkeypatch.setattr(store, "get_run", get_run_once_away)
        srv.loop.call_soon_threadsafe(srv.runtime.attempts.cancel_heard, "")  # reconnected
        wait_for(lambda: srv.executor.cancels, what="the cancel to be carried out")
        assert srv.executor.cancels[0][:2] == (run_id, 1)
