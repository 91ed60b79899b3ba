"""The dashboard's lists of run states are the API's: a state the API does not have, offered
as a filter, answered every pick of it with a 422 and an empty table (`retrying`, `lost`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runyard.models import RunState

JS = Path(__file__).resolve().parents[2] / "src" / "runyard" / "api" / "ui" / "js"
STATES = {s.value for s in RunState}


@pytest.mark.parametrize(
    ("file", "name"),
    [("pages/runs.js", "STATES"), ("pages/batches.js", "ORDER"), ("util.js", "ACTIVE")],
)
def test_every_state_the_dashboard_names_is_one_the_api_has(file: str, name: str) -> None:
    source = (JS / file).read_text()
    found = re.search(rf"const {name} = (?:new Set\()?\[([^\]]*)\]", source)
    assert found is not None, f"{name} not found in {file}"
    named = set(re.findall(r'"([^"]*)"', found.group(1))) - {""}
    assert named <= STATES, named - STATES
    if name != "ACTIVE":  # a filter and a breakdown offer every state
        assert named == STATES
