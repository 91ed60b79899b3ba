"""The start-up audit of the run directories against the store (services/file_audit.py), on
both stores: each sign found, and nothing reported of what the store does know."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard.clock import new_id
from runyard.models import AttemptEnd, AttemptState, RunState
from runyard.services.file_audit import audit
from runyard.store import Store
from tests.support import queued_run

pytestmark = pytest.mark.anyio
SUCCEEDED = AttemptEnd(
    attempt_state=AttemptState.EXITED, ended_at=3000.0, run_state=RunState.SUCCEEDED,
    reason="exit code 0", outcome="exit", exit_code=0,
)  # fmt: skip


def files(runs: Path, run_id: str, *names: str) -> None:
    (runs / run_id).mkdir(parents=True)
    for name in names:
        (runs / run_id / name).write_text("x")


async def test_the_signs_of_a_store_behind_its_files_and_nothing_else(
    store: Store, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    queued, running, finished = queued_run(), queued_run(), queued_run()
    for run in (queued, running, finished):
        await store.insert_run(run)
    (claimed,) = await store.claim(1, {}, now=1500.0, host="h")
    running = next(r for r in (queued, running, finished) if r.id == claimed.run.id)
    queued = next(r for r in (queued, finished) if r.id != running.id)
    files(runs, queued.id, "attempt-2.exit.json", "attempt-2.log")  # past its 0 attempts
    files(runs, running.id, "attempt-1.log")  # its own attempt: no sign
    lost = new_id()
    files(runs, lost, "attempt-1.log")  # a run the store does not have
    (runs / ".deleting").mkdir()  # the trash is never a run
    # named as no run: no sign of lost writes, but named (a probe: `junkdir` was reported
    # as a run the store had lost)
    (runs / "stray.txt").write_text("x")
    (runs / "junkdir").mkdir()
    # a run the store has, its directory replaced by a link: its damage, named as such
    replaced = queued_run()
    await store.insert_run(replaced)
    (runs / replaced.id).symlink_to("/")

    found = await audit(store, runs)
    assert found.done and found.error is None
    assert (found.unknown_runs, found.attempts_ahead) == (1, 1)
    assert sorted(found.examples) == sorted([lost, f"{queued.id}/attempt-2"])
    assert (found.damaged_runs, found.foreign) == (1, 2)
    assert f"{replaced.id} (not a directory)" in found.odd_examples
    assert {"'junkdir'", "'stray.txt'"} < set(found.odd_examples)


async def test_a_finished_run_and_an_empty_directory_are_no_sign(
    store: Store, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    assert (await audit(store, runs)).unknown_runs == 0  # no runs directory yet
    runs.mkdir()
    run = queued_run()
    await store.insert_run(run)
    await store.claim(1, {}, now=1500.0, host="h")
    files(runs, run.id, "attempt-1.log", "attempt-7.log")
    assert (await audit(store, runs)).attempts_ahead == 1
    assert await store.last_attempts([run.id, "nope"]) == {run.id: 1}
    # finished, it has no attempt to come: what its directory holds is no sign
    assert await store.end_attempt(run.id, 1, SUCCEEDED) is not None
    assert await store.last_attempts([run.id]) == {run.id: None}
    assert (await audit(store, runs)).attempts_ahead == 0


async def test_a_claim_read_before_a_runs_insert_never_dates_its_start_before_it(
    store: Store,
) -> None:
    """A probe on three servers: a claim's `now` is read before its transaction, which can
    take a run another server inserted after that moment; its `running` event was dated
    before its `queued` one (3 to 8 ms)."""
    run = queued_run()  # created at 1000
    await store.insert_run(run)
    (claim,) = await store.claim(1, {}, now=999.5, host="h")
    assert claim.run.started_at == 1000.0
    events = await store.list_events(run.id, after=0)
    assert [e.kind for e in events] == ["state", "state"]
    assert events[1].at >= events[0].at
