"""Requests sent again under their Idempotency-Key: answered with what the key made, before
any check (a job's file removed since, its numbers spelled otherwise), and a batch that can
never fit its queue refused for good, not asked to be retried."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.inprocess import FakedServer, faked
from tests.support import wait_for

JOBS = {
    "nap": 'command = ["true"]\n[params.seconds]\ntype = "float"\ndefault = 1.0\n'
    '[params.n]\ntype = "int"\ndefault = 0\n',
    "small": 'command = ["true"]\nmax_queue = 5\n',
}


@pytest.fixture
def server(
    write_job: Callable[[str, str], Path], jobs_dir: Path, tmp_path: Path
) -> Iterator[FakedServer]:
    for name, text in JOBS.items():
        write_job(name, text)
    with faked(tmp_path, jobs_dir, capacity=1, jobs_refresh_s=0) as srv:
        yield srv


def keyed(server: FakedServer, url: str, key: str, body: dict[str, object]) -> dict[str, object]:
    resp = server.post(url, json=body, headers={"Idempotency-Key": key})
    return {"status": resp.status_code, "replayed": resp.headers.get("Idempotent-Replayed"),
            **resp.json()}  # fmt: skip


def test_a_batch_sent_again_with_its_numbers_spelled_otherwise_is_the_same_batch(
    server: FakedServer,
) -> None:
    """A probe: `1.0` then `1` (the SDK's float, then the CLI's) was a 409."""
    first = keyed(server, "/v1/batches", "b1", {"job": "nap", "iterations": 2,
                                                 "params": {"seconds": 1.0}})  # fmt: skip
    assert first["status"] == 202, first
    again = keyed(server, "/v1/batches", "b1", {"job": "nap", "iterations": 2.0,
                                                 "params": {"seconds": 1}})  # fmt: skip
    assert (again["status"], again["replayed"], again["id"]) == (202, "true", first["id"])
    swept = keyed(server, "/v1/batches", "b2", {"job": "nap", "sweep": {"n": [1, 2]}})
    again = keyed(server, "/v1/batches", "b2", {"job": "nap", "sweep": {"n": [1.0, 2]}})
    assert (again["status"], again["id"]) == (202, swept["id"])
    other = keyed(server, "/v1/batches", "b2", {"job": "nap", "sweep": {"n": [1, 3]}})
    assert other["status"] == 409, other


def test_a_replay_is_answered_after_its_jobs_file_went(server: FakedServer, jobs_dir: Path) -> None:
    """A probe: a client retrying after a timeout, while its job's file was being edited,
    was told the job did not exist, and could take it that nothing had been made."""
    run = keyed(server, "/v1/runs", "r1", {"job": "nap", "params": {"seconds": 2.0}})
    batch = keyed(server, "/v1/batches", "b1", {"job": "nap", "iterations": 3})
    (jobs_dir / "nap.toml").unlink()
    wait_for(lambda: server.get("/v1/jobs/nap").status_code == 404, what="the job gone")
    again = keyed(server, "/v1/runs", "r1", {"job": "nap", "params": {"seconds": 2}})
    assert (again["status"], again["replayed"], again["id"]) == (202, "true", run["id"])
    with_defaults = {"job": "nap", "params": {"seconds": 2, "n": 0}, "priority": 0}
    assert keyed(server, "/v1/runs", "r1", with_defaults)["id"] == run["id"]
    assert keyed(server, "/v1/runs", "r1", {"job": "nap", "params": {"n": 1}})["status"] == 409
    # a param left out is its default as the run stored the job (a review: it counted as
    # whatever the run had, so another request got the run back)
    assert keyed(server, "/v1/runs", "r1", {"job": "nap", "params": {}})["status"] == 409
    assert keyed(server, "/v1/runs", "r1", {"job": "nap", "priority": 3})["status"] == 409
    again = keyed(server, "/v1/batches", "b1", {"job": "nap", "iterations": 3})
    assert (again["status"], again["replayed"], again["id"]) == (202, "true", batch["id"])
    # no key, or one that made nothing: the job is not declared
    assert keyed(server, "/v1/runs", "r2", {"job": "nap"})["status"] == 404
    assert server.post("/v1/batches", json={"job": "nap", "iterations": 1}).status_code == 404


def test_a_batch_larger_than_its_queue_can_hold_is_refused_for_good(
    tmp_path: Path, write_job: Callable[[str, str], Path], jobs_dir: Path
) -> None:
    """A probe: a 429 with Retry-After, which a client following it retried for ever."""
    for name, text in JOBS.items():
        write_job(name, text)
    with faked(tmp_path, jobs_dir, max_queue=8) as srv:
        for body, field, limit in (
            ({"job": "small", "iterations": 6}, "iterations", 5),
            ({"job": "nap", "sweep": {"n": list(range(9))}}, "sweep", 8),
        ):
            resp = srv.post("/v1/batches", json=body)
            assert resp.status_code == 422, resp.text
            assert "Retry-After" not in resp.headers
            assert resp.json()["errors"][0]["field"] == f"body.{field}", resp.json()
            assert f"max_queue ({limit})" in resp.json()["detail"]
        assert srv.get("/v1/runs").json()["runs"] == []
        fits = srv.post("/v1/batches", json={"job": "small", "iterations": 5})
        assert fits.status_code == 202, fits.text
