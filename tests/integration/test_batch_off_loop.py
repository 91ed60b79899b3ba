"""A batch's runs are made off the event loop, as its values are validated: 10,000 made in
one step held the loop about 0.2 s (a probe: one `/health/live` answered in 197 ms beside a
batch of 10,000). Asserted by where they are made, not by how long anything takes."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from runyard.services.runs import RunService
from tests.inprocess import serving
from tests.support import EXAMPLE_JOBS


def test_a_batchs_runs_are_made_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made_on: set[str] = set()
    plain = RunService.new_run

    def noted(self: RunService, *args: Any, **kw: Any) -> Any:
        made_on.add(threading.current_thread().name)
        return plain(self, *args, **kw)

    monkeypatch.setattr(RunService, "new_run", noted)
    with serving(tmp_path, EXAMPLE_JOBS) as server:
        resp = server.post("/v1/batches", json={"job": "true", "iterations": 50})
        assert resp.status_code == 202, resp.text
        assert made_on and server.thread.name not in made_on, made_on
        assert server.get("/v1/batches/" + resp.json()["id"]).json()["size"] == 50
