"""A refusal names the field the client sent, once: never a pydantic union's member tags (an
attacker's probe found `header.Last-Event-ID.constrained-str` beside a spurious
`header.Last-Event-ID.none`, `query.attempt.constrained-int`, and
`messages.0.content.constrained-str` on the OpenAI-compatible route). A key of the client's
own that reads like a tag (`none`, `str`) is its field's name, and is kept."""

from __future__ import annotations

from typing import Any

import pytest

from runyard.models import RunState
from tests import web
from tests.support import ServerProcess

pytestmark = pytest.mark.e2e


def errors(resp: Any) -> list[dict[str, str]]:
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    found: list[dict[str, str]] = resp.json()["errors"]
    return found


def finished_run(server: ServerProcess) -> str:
    with server.client() as c:
        run = c.submit("true")
        assert server.wait_run(c, run.id).state is RunState.SUCCEEDED
    return run.id


def test_optional_query_and_header_params_are_named_once(start_server) -> None:
    server = start_server()
    base = f"{server.url}/v1/runs/{finished_run(server)}"
    cases = [  # (path, query, headers, field)
        ("logs/stream", {}, {"Last-Event-ID": "abc"}, "header.Last-Event-ID"),
        ("events", {}, {"Last-Event-ID": "-1"}, "header.Last-Event-ID"),
        ("logs/stream", {"attempt": "0"}, {}, "query.attempt"),
        ("logs/stream", {"attempt": "x"}, {}, "query.attempt"),
        ("logs/stream", {"offset": "-1"}, {}, "query.offset"),
        ("events", {"after": "1.5"}, {}, "query.after"),
        ("logs", {"attempt": "0"}, {}, "query.attempt"),
    ]
    with web.Client(timeout=30) as http:
        for path, query, headers, field in cases:
            got = errors(http.get(f"{base}/{path}", params=query, headers=headers))
            assert [e["field"] for e in got] == [field], (path, query, headers, got)


def chat(server: ServerProcess, content: Any) -> dict[str, Any]:
    body = {"model": "chat-agent", "messages": [{"role": "user", "content": content}]}
    resp = web.post(f"{server.url}/v1/chat/completions", json=body, timeout=30)
    assert resp.status_code == 400, resp.text
    error: dict[str, Any] = resp.json()["error"]
    return error


def test_chat_message_content_is_named_as_sent(start_server) -> None:
    server = start_server()
    wrong_type = chat(server, 5)
    assert wrong_type["param"] == "messages.0.content"
    assert wrong_type["message"] == (
        "messages.0.content: Input should be a string or a list of text parts"
    )
    too_long = chat(server, "x" * 100_001)
    assert too_long["param"] == "messages.0.content"
    assert too_long["message"] == (
        "messages.0.content: String should have at most 100000 characters"
    )
    part = chat(server, [{"type": "text", "text": "ok"}, {"type": "text", "text": 7}])
    assert part["param"] == "messages.0.content.1.text"
    assert part["message"].count("messages.0.content") == 1  # one error, not one per member
    assert chat(server, [1])["param"] == "messages.0.content.0"


def test_a_key_of_the_clients_own_that_reads_like_a_tag_is_kept(start_server) -> None:
    server = start_server()
    labels = {"none": "a\x01b", "str": "ok", "constrained-str": "c\x02d"}
    body = {"job": "true", "labels": labels}
    got = errors(web.post(f"{server.url}/v1/runs", json=body, timeout=30))
    assert sorted(e["field"] for e in got) == ["body.labels.constrained-str", "body.labels.none"]


def test_a_services_refusal_names_the_field_where_the_client_sent_it(start_server) -> None:
    """A probe: a service's refusals named bare fields (`cron`, `attempt`, `params.n`) where
    FastAPI's name them where they were sent (`body.cron`, `query.attempt`)."""
    server = start_server()
    run_id = finished_run(server)
    cases = [  # (method, path, body, field)
        ("POST", "/v1/schedules", {"job": "true", "cron": "61 * * * *"}, "body.cron"),
        ("GET", f"/v1/runs/{run_id}/logs?attempt=5", None, "query.attempt"),
        ("GET", "/v1/jobs/no-such-job", None, "path.name"),  # was `name`
    ]
    with web.Client(timeout=30) as http:
        for method, path, body, field in cases:
            got = http.request(method, f"{server.url}{path}", json=body)
            assert got.status_code in (404, 422), (path, got.text)
            assert got.json()["field"] == field, (path, got.json())


def test_a_key_that_prints_as_nothing_or_turns_text_around_is_escaped_in_its_field(
    start_server,
) -> None:
    """A probe: a key's control characters and format marks were named as sent: U+202E turns
    what follows it around wherever the problem is shown (a log, a terminal, the dashboard),
    so `body.params.x<RLO>cod.exe` reads as another field. Each is escaped as Python writes it;
    a key that prints as itself (`é`) is kept. A refused key is named as sent, without
    pydantic's `[key]` after it."""
    server = start_server()
    cases = [  # (where, body, field)
        ("runs", {"job": "true", "params": {"x\u202ecod": 1}}, "body.params.x\\u202ecod"),
        ("runs", {"job": "true", "labels": {"\x01": "a"}}, "body.labels.\\x01"),
        ("runs", {"job": "true", "\x1b[2J": 1}, "body.\\x1b[2J"),
        ("batches", {"job": "true", "sweep": {"\u200bn": [1]}}, "body.sweep.\\u200bn"),
        ("runs", {"job": "true", "params": {"é": 1}}, "body.params.é"),
    ]
    with web.Client(timeout=30) as http:
        for where, body, field in cases:
            got = errors(http.post(f"{server.url}/v1/{where}", json=body))
            assert [e["field"] for e in got] == [field], (body, got)
            assert field in http.post(f"{server.url}/v1/{where}", json=body).json()["detail"]


def test_a_batch_names_a_bad_value_where_it_sits_in_the_sweep(start_server) -> None:
    """A probe: a swept value was named as a param of the base (`body.params.seconds`), which
    the client never sent, and a sweep's unknown param the same way (`body.params.zz`)."""
    server = start_server()
    url = f"{server.url}/v1/batches"
    # the product's order, the last param varying fastest: element 1 is seconds[1]
    sweep = {"job": "sleeper", "sweep": {"seconds": [1, "x", 3]}}
    got = web.post(url, json=sweep, timeout=30)
    assert [e["field"] for e in errors(got)] == ["body.sweep.seconds.1"]
    assert got.json()["element"] == 1
    two = {"job": "sleeper", "sweep": {"seconds": [1, 2], "zz": ["a", "b"]}}
    assert [e["field"] for e in errors(web.post(url, json=two, timeout=30))] == ["body.sweep.zz.0"]
    base = {"job": "sleeper", "params": {"seconds": -1}, "iterations": 2}
    assert [e["field"] for e in errors(web.post(url, json=base, timeout=30))] == [
        "body.params.seconds"
    ]
