"""Integer query params read strictly on a real server: the probe that found pydantic's lax
int (`/logs?offset=1_0` read as 10), and the WebSocket's `after`, which only a real server
refuses as over HTTP (the in-process table is tests/integration/test_query_integers.py)."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from tests import web
from tests.integration.test_query_integers import HOSTILE, REFUSAL

pytestmark = pytest.mark.e2e


def test_integer_query_params_are_ascii_digits_over_http_and_websocket(start_server) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    server = start_server()
    with server.client() as c:
        run = c.submit("true", {})
        server.wait_run(c, run.id)
    logs = web.get(f"{server.url}/v1/runs/{run.id}/logs?offset=1_0")
    assert logs.status_code == 422
    assert logs.json()["errors"] == [{"field": "query.offset", "message": REFUSAL}]
    assert web.get(f"{server.url}/v1/runs/{run.id}/logs?offset=10").status_code == 200

    ws_url = f"ws://127.0.0.1:{server.port}/v1/runs/{run.id}/ws"
    for value in HOSTILE:
        with pytest.raises(InvalidStatus) as info:
            connect(f"{ws_url}?after={quote(value, safe='')}")
        answer = info.value.response
        assert answer.status_code == 422, ascii(value)
        assert answer.headers["content-type"] == "application/problem+json"
        assert json.loads(answer.body)["errors"] == [{"field": "query.after", "message": REFUSAL}]
    for value in ("0", "00"):  # zeros in front, as ever
        with connect(f"{ws_url}?after={value}") as ws:
            messages = [json.loads(m) for m in ws]
        assert messages[-1]["type"] == "end", value
