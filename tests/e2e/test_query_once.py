"""A query parameter that takes one value, given twice, is refused naming it; one declared
as a list takes every value (api/query_once.py). A real server on loopback."""

from __future__ import annotations

import pytest

from tests import web

pytestmark = pytest.mark.e2e


def test_a_one_value_parameter_given_twice_is_refused_naming_it(start_server) -> None:
    server = start_server()
    refused = web.get(f"{server.url}/v1/runs?limit=1&limit=2", timeout=10)
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert problem["field"] == "query.limit"
    assert "given 2 times" in problem["detail"]
    # once each, or a list parameter repeated: as before
    assert web.get(f"{server.url}/v1/runs?limit=1", timeout=10).status_code == 200
    listed = web.get(f"{server.url}/v1/runs?label=a=1&label=b=2", timeout=10)
    assert listed.status_code == 200, listed.text
