"""The body of `POST /v1/chat/completions`, sent as raw bytes to the whole server in this
process (tests/inprocess.py): JSON throughout, ignored fields included, and only as
`application/json`; refused in OpenAI's shape naming what is wrong, nothing started (probes:
`{"temperature": NaN}` answered 200; a body sent as text/plain was refused as "Input should
be a valid dictionary", which did not say why)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from runyard.bounds import TEXT_PATTERN
from tests.inprocess import InProcessServer, serving
from tests.support import EXAMPLE_JOBS

PATH = "/v1/chat/completions"
JSON = {"content-type": "application/json"}
ASK = b'"model": "chat-agent", "messages": [{"role": "user", "content": "hi"}]'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    with serving(tmp_path_factory.mktemp("openai-bodies"), EXAMPLE_JOBS) as srv:
        yield srv


def runs(server: InProcessServer) -> int:
    return len(server.get("/v1/runs", params={"job": "chat"}).json()["runs"])


def refused(server: InProcessServer, body: bytes, headers: dict[str, str]) -> dict[str, str]:
    before = runs(server)
    resp = server.post(PATH, content=body, headers=headers)
    assert resp.status_code == 400, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert runs(server) == before  # nothing started
    error: dict[str, str] = resp.json()["error"]
    assert error["type"] == "invalid_request_error"
    return error


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        (b'"temperature": NaN', "temperature", "only finite numbers"),
        (b'"temperature": Infinity', "temperature", "only finite numbers"),
        (b'"top_p": -Infinity', "top_p", "only finite numbers"),
        (b'"seed": 1e999', "seed", "only finite numbers"),
        (b'"temperature": "\\ud800"', "temperature", "lone surrogate U+D800 at position 0"),
        (b'"metadata": {"a": ["x\\udc00"]}', "metadata.a.0", "lone surrogate U+DC00 at position 1"),
        (b'"metadata": {"k\\ud800": 1}', "metadata", "the key 'k\\ud800': lone surrogate U+D800"),
    ],
)  # fmt: skip
def test_what_is_not_json_is_refused_in_an_ignored_field(
    server: InProcessServer, extra: bytes, param: str, words: str
) -> None:
    error = refused(server, b"{" + ASK + b", " + extra + b"}", JSON)
    assert error["param"] == param
    assert error["code"] == "invalid_input"
    assert error["message"].startswith(f"{param}: ")
    assert words in error["message"]


def test_only_a_json_body_is_taken_and_another_is_refused_saying_so(
    server: InProcessServer,
) -> None:
    for sent in ("text/plain", "application/x-www-form-urlencoded", "", None):
        headers = {} if sent is None else {"content-type": sent}
        error = refused(server, b"{" + ASK + b"}", headers)
        assert error["code"] == "unsupported_content_type", sent
        assert error["param"] is None
        assert "must be JSON, sent with Content-Type: application/json" in error["message"]
    # JSON is taken with its parameters, in any case, big integers and all, as before
    ok = server.post(
        PATH, content=b"{" + ASK + b', "temperature": 0.5, "seed": 12345678901234567890123}',
        headers={"content-type": "Application/JSON; charset=utf-8"}, timeout=60,
    )  # fmt: skip
    assert ok.status_code == 200, ok.text
    assert ok.json()["choices"][0]["message"]["content"] == "You said: hi\n"
    # a syntax error is the JSON reader's, answered as on every route
    error = refused(server, b"{" + ASK + b",}", JSON)
    assert error["param"] == "body" and "not valid JSON at character" in error["message"]
    # and the route still declares (and publishes) its body
    doc = server.get("/openapi.json").json()
    body = doc["paths"][PATH]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/ChatRequest")


@pytest.mark.parametrize("role", ["user", "system", "assistant"])
def test_content_given_as_no_parts_at_all_is_refused(server: InProcessServer, role: str) -> None:
    """A probe: `"content": []` was taken as an empty message, where OpenAI refuses it."""
    body = b'{"model": "chat-agent", "messages": [{"role": "%s", "content": []}]}' % role.encode()
    error = refused(server, body, JSON)
    assert error["param"] == "messages.0.content"


def test_the_document_refuses_a_control_character_in_a_message_as_the_server_does(
    server: InProcessServer,
) -> None:
    """A probe: the document took U+0001 in a message's content, the server refused it (422
    `messages.0.content`); every other free text carries TEXT_PATTERN, and these do now."""
    schemas = server.get("/openapi.json").json()["components"]["schemas"]
    content = schemas["ChatMessage"]["properties"]["content"]["anyOf"]
    texts = [branch for branch in content if branch.get("type") == "string"]
    texts.append(schemas["TextPart"]["properties"]["text"])
    assert [t.get("pattern") for t in texts] == [TEXT_PATTERN, TEXT_PATTERN]
    for sent in ("\u0001", "\u0085"):
        body = {"model": "chat-agent", "messages": [{"role": "user", "content": f"a{sent}b"}]}
        resp = server.post(PATH, content=json.dumps(body).encode(), headers=JSON)
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["param"] == "messages.0.content"
