"""The OpenAI-compatible front (docs/openai.md), with the real `openai` SDK against a real
server: models, completions plain and streamed, queueing for a slot, a full queue, errors in
OpenAI's shape, retries that attach to the first run, disconnects, auth."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from runyard.auth import Role, create_token
from tests import web
from tests.support import ServerProcess, wait_for

pytestmark = pytest.mark.e2e

PROGRAMS = Path(__file__).parent / "programs"
GATED = """
command = ["python3", "@PROGRAMS@/chat_gate.py", "{conversation}"]
[params.conversation]
type = "str"
max_length = 10000
[env]
CHAT_GATE = "@GATE@"
[openai]
input = "conversation"
"""


_OPENED: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_sdk_clients(start_server: object) -> Iterator[None]:
    """Each SDK client's connections closed with its test, not whenever the garbage collector
    gets to them (an unclosed socket's warning would fail whichever test runs then); and
    before the servers' leak check (it asks for `start_server`, so it ends first), which
    otherwise waited out the server's keep-alive timeout for the SDK's idle connection."""
    yield
    while _OPENED:
        _OPENED.pop().close()


def sdk(server: ServerProcess, key: str = "unused", retries: int = 0) -> openai.OpenAI:
    client = openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=key, max_retries=retries, timeout=120
    )
    _OPENED.append(client)
    return client


def ask(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def runs_of(server: ServerProcess, job: str, headers: dict[str, str] | None = None) -> list[Any]:
    resp = web.get(f"{server.url}/v1/runs", params={"job": job}, headers=headers, timeout=10)
    runs: list[Any] = resp.json()["runs"]
    return runs


@pytest.fixture
def gated(write_job: Callable[[str, str], Path], tmp_path: Path) -> Callable[..., Path]:
    """Writes a job answering in two parts, the second once `gate` (returned) exists."""
    gate = tmp_path / "go"

    def make(name: str = "gated", extra: str = "", head: str = "") -> Path:
        text = GATED.replace("@PROGRAMS@", str(PROGRAMS)).replace("@GATE@", str(gate))
        write_job(name, head + text + extra)
        return gate

    return make


def test_models_and_completions_plain_and_streamed(start_server) -> None:
    server = start_server()
    client = sdk(server)
    models = client.models.list()
    assert {m.id for m in models.data} == {"agent", "chat-agent"}
    assert all(m.object == "model" and m.owned_by == "runyard" for m in models.data)
    assert client.models.retrieve("chat-agent").id == "chat-agent"

    raw = client.chat.completions.with_raw_response.create(
        model="chat-agent",
        messages=[{"role": "system", "content": "be kind"}, *ask("hello queue")],
    )
    completion = raw.parse()
    run_id = raw.headers["x-runyard-run-id"]
    assert completion.id == f"chatcmpl-{run_id}"
    assert completion.object == "chat.completion"
    assert completion.model == "chat-agent"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "You said: hello queue\n"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    run = web.get(f"{server.url}/v1/runs/{run_id}").json()
    assert run["state"] == "succeeded"
    assert run["params"] == {"conversation": "system: be kind\n\nuser: hello queue"}
    assert run["labels"]["openai.model"] == "chat-agent"

    stream = client.chat.completions.create(
        model="chat-agent", messages=ask("one two three four"), stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert "".join(contents) == "You said: one two three four\n"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert len(runs_of(server, "chat")) == 2


def test_the_readme_agent_answers_as_a_model(start_server) -> None:
    server = start_server()
    reply = sdk(server).chat.completions.create(model="agent", messages=ask("add a note"))
    report = reply.choices[0].message.content or ""
    assert report.startswith("agent: task 'user: add a note', editing README.md\n")
    assert "agent: wrote outputs/changes.diff" in report
    (run,) = runs_of(server, "agent")
    diff = web.get(f"{server.url}/v1/runs/{run['id']}/artifacts/outputs/changes.diff").text
    assert "+<!-- agent note: user: add a note -->" in diff


def test_a_stream_shows_the_answer_while_it_is_written(start_server, gated, jobs_dir) -> None:
    gate = gated()
    server = start_server(jobs_dir)
    stream = sdk(server).chat.completions.create(model="gated", messages=ask("hi"), stream=True)
    chunks = iter(stream)
    assert next(chunks).choices[0].delta.role == "assistant"
    first = next(chunks).choices[0].delta.content
    assert first == "part one\n"
    # the run is still running: what arrived was written live, not read after the end
    assert runs_of(server, "gated")[0]["state"] == "running"
    gate.touch()
    rest = [c.choices[0] for c in chunks]
    assert "".join(c.delta.content or "" for c in rest) == "part two: user: hi\n"
    assert rest[-1].finish_reason == "stop"


def test_twelve_calls_with_room_for_ten_queue_and_all_get_answers(
    start_server, gated, jobs_dir
) -> None:
    gate = gated()
    server = start_server(jobs_dir, capacity=10)
    client = sdk(server)

    def call(i: int) -> tuple[str, str | None]:
        raw = client.chat.completions.with_raw_response.create(
            model="gated", messages=ask(f"call {i}")
        )
        return raw.headers["x-runyard-run-id"], raw.parse().choices[0].message.content

    with ThreadPoolExecutor(12) as pool:
        futures = []
        for i in range(12):  # one at a time, so that the order of arrival is known
            futures.append(pool.submit(call, i))
            wait_for(lambda n=i + 1: len(runs_of(server, "gated")) == n, what=f"call {i}")
        states = wait_for(
            lambda: (s := [r["state"] for r in runs_of(server, "gated")]).count("running") == 10
            and s, what="ten calls running",
        )  # fmt: skip
        runs = sorted(runs_of(server, "gated"), key=lambda r: r["created_at"])
        assert sorted(states) == ["queued"] * 2 + ["running"] * 10  # queued, not refused
        assert [r["state"] for r in runs[-2:]] == ["queued", "queued"]  # the last two came
        gate.touch()
        answers = [f.result() for f in futures]
    by_id = {r["id"]: r for r in runs}
    for i, (run_id, content) in enumerate(answers):
        assert content == f"part one\npart two: user: call {i}\n"
        assert by_id[run_id]["params"]["conversation"] == f"user: call {i}"
    ended = {r["id"]: r for r in runs_of(server, "gated")}
    first_ten = [ended[r["id"]]["started_at"] for r in runs[:10]]
    assert all(ended[r["id"]]["started_at"] >= max(first_ten) for r in runs[-2:])  # FIFO


def test_a_full_queue_is_a_rate_limit_after_the_retries_it_asks_for(
    start_server, gated, jobs_dir
) -> None:
    gate = gated("full", head="max_queue = 1\nconcurrency = 1\n")
    (jobs_dir / "quick.toml").write_text('command = ["true"]\n')
    server = start_server(jobs_dir)
    held = [web.post(f"{server.url}/v1/runs", json={"job": "full", "params": {"conversation": c}})
            for c in ("runs", "waits")]  # fmt: skip
    assert [r.status_code for r in held] == [202, 202]  # one running (gated), one queued: full
    for _ in range(3):  # a finish rate, so that the server can say when to come back
        web.post(f"{server.url}/v1/runs", json={"job": "quick"},
                   headers={"Prefer": "wait=30"}, timeout=40)  # fmt: skip
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as caught:
        sdk(server, retries=2).chat.completions.create(model="full", messages=ask("x"))
    took = time.monotonic() - started
    headers = caught.value.response.headers
    wait_ms = int(headers["retry-after-ms"])
    assert 100 <= wait_ms <= 30_000 and int(headers["retry-after"]) >= 1
    assert took >= 2 * wait_ms / 1000 * 0.99  # the SDK waited as told, twice, before giving up
    assert caught.value.body["code"] == "queue_full"  # type: ignore[index]

    def statuses() -> list[int]:  # each try is logged once answered
        lines = server.log_path.read_text().splitlines()
        return [json.loads(line)["status"] for line in lines
                if '"route":"/v1/chat/completions"' in line.replace(" ", "")]  # fmt: skip

    assert wait_for(lambda: len(s := statuses()) >= 3 and s) == [429, 429, 429]
    assert sorted(r["id"] for r in runs_of(server, "full")) == sorted(r.json()["id"] for r in held)
    gate.touch()


def test_errors_are_in_openai_shape(start_server, gated, jobs_dir) -> None:
    gated()
    server = start_server(jobs_dir)
    client = sdk(server)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-nope", messages=ask("x"))
    assert missing.value.body == {"message": "the model 'gpt-nope' does not exist",
                                  "type": "invalid_request_error", "param": "model",
                                  "code": "model_not_found"}  # fmt: skip
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-nope")
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="gated", messages=[{"role": "robot", "content": "x"}])  # type: ignore[list-item]
    assert bad.value.body["param"] == "messages.0.role"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as many:  # one run gives one answer
        client.chat.completions.create(model="gated", messages=ask("x"), n=2)
    assert many.value.body["param"] == "n"  # type: ignore[index]
    for count in (True, "1"):  # not a count (a probe: both were taken as 1)
        with pytest.raises(openai.BadRequestError) as odd:
            client.chat.completions.create(model="gated", messages=ask("x"), n=count)  # type: ignore[arg-type]
        assert odd.value.body["param"] == "n"  # type: ignore[index]
    with pytest.raises(openai.UnprocessableEntityError) as too_long:
        client.chat.completions.create(model="gated", messages=ask("x" * 20_000))
    assert too_long.value.body["param"] == "messages"  # type: ignore[index]
    assert "at most 10000" in too_long.value.message
    with pytest.raises(openai.UnprocessableEntityError) as control:
        client.chat.completions.create(model="gated", messages=ask("a NUL \x00 here"))
    assert control.value.body["param"] == "messages.0.content"  # type: ignore[index]
    # malformed, as the table says (a probe: both were 422): a key twice, a header twice
    url = f"{server.url}/v1/chat/completions"
    twice = b'{"model": "gated", "model": "other", "messages": [{"role": "user", "content": "x"}]}'
    got = web.post(url, content=twice, headers={"Content-Type": "application/json"})
    assert (got.status_code, got.json()["error"]["param"]) == (400, "model"), got.text
    keys = [
        ("Content-Type", "application/json"),
        ("Idempotency-Key", "a"),
        ("Idempotency-Key", "b"),
    ]
    got = web.post(url, json={"model": "gated", "messages": ask("x")}, headers=keys)
    assert (got.status_code, got.json()["error"]["param"]) == (400, "header.Idempotency-Key")
    assert runs_of(server, "gated") == []  # nothing was started by a refused call
    # the rest of the API keeps its problem documents
    assert (
        web.get(f"{server.url}/v1/runs/nope")
        .headers["content-type"]
        .startswith("application/problem+json")
    )


def test_openais_other_endpoints_say_what_this_server_has(start_server) -> None:
    """A probe: the SDK's Responses API (what OpenAI's documentation leads with), the legacy
    completions and embeddings were answered a bare "Not Found"."""
    server = start_server()
    client = sdk(server)
    calls = {
        "POST /v1/responses": lambda: client.responses.create(model="agent", input="hi"),
        "POST /v1/completions": lambda: client.completions.create(model="agent", prompt="hi"),
        "POST /v1/embeddings": lambda: client.embeddings.create(model="agent", input="hi"),
    }
    for where, call in calls.items():
        with pytest.raises(openai.NotFoundError) as missing:
            call()
        assert missing.value.body["message"] == (  # type: ignore[index]
            f"Invalid URL ({where}): this server's OpenAI-compatible API is "
            "POST /v1/chat/completions and GET /v1/models"
        )
    # runyard's own routes under /v1 keep their problem documents
    got = web.get(f"{server.url}/v1/batches/nope")
    assert got.headers["content-type"].startswith("application/problem+json"), got.text
    got = web.get(f"{server.url}/v1/completionsX")
    assert got.headers["content-type"].startswith("application/problem+json"), got.text


def test_a_failing_agent_is_an_error_plain_and_streamed(start_server, gated, jobs_dir) -> None:
    gated()
    server = start_server(jobs_dir)
    client = sdk(server, retries=2)
    with pytest.raises(openai.InternalServerError) as plain:
        client.chat.completions.create(model="gated", messages=ask("please fail"))
    assert plain.value.message.endswith(" failed: exit code 3")  # said once (it was twice)
    assert plain.value.body["code"] == "failed"  # type: ignore[index]
    run_id = plain.value.response.headers["x-runyard-run-id"]
    assert [r["id"] for r in runs_of(server, "gated")] == [run_id]  # not retried: same answer
    stream = client.chat.completions.create(
        model="gated", messages=ask("now please fail"), stream=True
    )
    got = []
    with pytest.raises(openai.APIError) as streamed:
        for c in stream:
            got.append(c.choices[0].delta.content)
    assert "part one\n" in got  # what it wrote before failing was streamed
    assert "exit code 3" in streamed.value.message


@pytest.mark.leaks_allowed("the first server is stopped mid-call")
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_a_call_retried_across_a_server_restart_makes_one_run(
    start_server, gated, jobs_dir, how: signal.Signals
) -> None:
    gate = gated()
    server = start_server(jobs_dir)
    client = sdk(server, retries=8)
    result: dict[str, Any] = {}

    def call() -> None:
        raw = client.chat.completions.with_raw_response.create(model="gated", messages=ask("hi"))
        result["replayed"] = raw.headers.get("idempotent-replayed")
        result["content"] = raw.parse().choices[0].message.content

    caller = threading.Thread(target=call)
    caller.start()
    wait_for(lambda: [r["state"] for r in runs_of(server, "gated")] == ["running"], what="run")
    server.stop(how)  # the run goes on under the supervisor
    if how is signal.SIGTERM:  # a graceful stop answers the waiting call at once: retry
        answered = [json.loads(line) for line in server.log_path.read_text().splitlines()
                    if '"/v1/chat/completions"' in line]  # fmt: skip
        assert [a["status"] for a in answered] == [503]
    start_server(jobs_dir, port=server.port)  # same data directory: it adopts the run
    gate.touch()
    caller.join(timeout=120)
    assert result["content"] == "part one\npart two: user: hi\n"
    assert result["replayed"] == "true"
    assert len(runs_of(server, "gated")) == 1


def test_an_idempotency_key_attaches_and_refuses_another_request(
    start_server, gated, jobs_dir
) -> None:
    gate = gated()
    gate.touch()
    server = start_server(jobs_dir)
    client = sdk(server, retries=2)
    key = {"Idempotency-Key": "chat-1"}
    first = client.chat.completions.with_raw_response.create(
        model="gated", messages=ask("a"), extra_headers=key
    )
    again = client.chat.completions.with_raw_response.create(
        model="gated", messages=ask("a"), extra_headers=key
    )
    assert first.headers["x-runyard-run-id"] == again.headers["x-runyard-run-id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert again.parse().choices[0].message.content == first.parse().choices[0].message.content
    with pytest.raises(openai.ConflictError):  # not retried: it would conflict again
        client.chat.completions.create(model="gated", messages=ask("b"), extra_headers=key)
    assert len(runs_of(server, "gated")) == 1


def test_a_caller_that_goes_away_leaves_the_run_to_finish(start_server, gated, jobs_dir) -> None:
    gate = gated()
    gated("cancelling", extra="cancel_on_disconnect = true\n")
    server = start_server(jobs_dir)
    client = sdk(server)
    for model in ("gated", "cancelling"):
        stream = client.chat.completions.create(model=model, messages=ask("bye"), stream=True)
        chunks = iter(stream)
        next(chunks)
        assert next(chunks).choices[0].delta.content == "part one\n"
        stream.close()
    with pytest.raises(httpx.ReadTimeout):  # a plain call, given up by its caller
        web.post(f"{server.url}/v1/chat/completions", timeout=httpx.Timeout(10, read=0.5),
                   json={"model": "cancelling", "messages": ask("plain")})  # fmt: skip
    wait_for(
        lambda: [r["state"] for r in runs_of(server, "cancelling")] == ["cancelled"] * 2,
        what="both runs of the job that asks for it cancelled",
    )
    gate.touch()
    (run,) = runs_of(server, "gated")
    done = wait_for(lambda: (r := web.get(f"{server.url}/v1/runs/{run['id']}").json())
                    ["state"] in ("succeeded", "failed", "cancelled") and r)  # fmt: skip
    assert done["state"] == "succeeded"


def test_messages_as_json_and_the_answer_from_a_file(start_server, write_job, jobs_dir) -> None:
    write_job(
        "filed",
        f"""
command = ["python3", "{PROGRAMS}/chat_gate.py", "--messages", "{{conversation}}"]
[params.conversation]
type = "json"
[openai]
model = "org/filed:v1"
input = "conversation"
format = "messages"
answer = "file:outputs/answer.txt"
""",
    )
    server = start_server(jobs_dir)
    client = sdk(server)
    messages: list[Any] = [
        {"role": "system", "content": "terse"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "in "}, {"type": "text", "text": "parts"}],
        },
    ]
    plain = client.chat.completions.create(model="org/filed:v1", messages=messages)
    assert plain.choices[0].message.content == "system=terse | user=in parts"
    stream = client.chat.completions.create(model="org/filed:v1", messages=messages, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "system=terse | user=in parts"  # the file, not the log


CUT = 4 * 2**20  # the answer's bound (services/chat.py MAX_ANSWER_BYTES)
# what the program writes, as a Python expression of bytes; what the answer must be
CUTS = {
    "three-byte": ("'€'.encode() * 1_500_000", "€" * (CUT // 3)),
    "invalid-after": (f"b'a' * {CUT} + b'\\x80' * 10", "a" * CUT),
    "invalid-before": (
        f"b'\\xff\\xfe' + b'a' * {CUT - 4} + b'\\xf0\\x9f\\x98\\x80' + b'a' * 10",
        "\ufffd\ufffd" + "a" * (CUT - 4),
    ),
}


@pytest.mark.parametrize("answer", ["log", "file"])
@pytest.mark.parametrize("written", sorted(CUTS))
def test_an_answer_cut_at_its_bound_ends_before_a_character_the_cut_would_split(
    start_server, write_job, jobs_dir, answer: str, written: str
) -> None:
    """A probe: 4.5 MB of three-byte characters, cut at the 4 MiB bound, ended plain in
    '€€€' from the log but streamed in '€€\\ufffd', and from a file in U+FFFD either way:
    a character the program never wrote, and two answers to one question. A re-probe: with
    invalid bytes about, a file's answer lost a character the program wrote, and the log's
    plain answer ended in a U+FFFD the stream did not send."""
    data, expected = CUTS[written]
    out = "open('outputs/a.md', 'wb')" if answer == "file" else "sys.stdout.buffer"
    program = f"import os, sys; os.makedirs('outputs', exist_ok=True); {out}.write({data})"
    write_job(
        "wordy",
        f"command = {json.dumps(['python3', '-c', program, '{conversation}'])}\n"
        '[params.conversation]\ntype = "str"\n[openai]\ninput = "conversation"\n'
        + ('answer = "file:outputs/a.md"\n' if answer == "file" else ""),
    )
    server = start_server(jobs_dir)
    client = sdk(server)
    plain = client.chat.completions.create(model="wordy", messages=ask("go"))
    assert plain.choices[0].finish_reason == "length"
    assert plain.choices[0].message.content == expected
    stream = client.chat.completions.create(model="wordy", messages=ask("go"), stream=True)
    pieces = [c.choices[0] for c in stream if c.choices]
    assert "".join(p.delta.content or "" for p in pieces) == expected
    assert pieces[-1].finish_reason == "length"


def test_auth_maps_to_the_sdk_errors(start_server, tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens.toml"
    tokens = {role: create_token(tokens_file, role.name.lower(), role) for role in Role}
    server = start_server(env={"RUNYARD_TOKENS_FILE": str(tokens_file)})
    with pytest.raises(openai.AuthenticationError) as wrong:
        sdk(server, key="nope").models.list()
    assert wrong.value.body["type"] == "authentication_error"  # type: ignore[index]
    reader = sdk(server, key=tokens[Role.READ])
    assert "chat-agent" in {m.id for m in reader.models.list().data}
    with pytest.raises(openai.PermissionDeniedError) as weak:
        reader.chat.completions.create(model="chat-agent", messages=ask("x"))
    assert "submit role" in weak.value.message
    answer = sdk(server, key=tokens[Role.SUBMIT]).chat.completions.create(
        model="chat-agent", messages=ask("ok")
    )
    assert answer.choices[0].message.content == "You said: ok\n"


# attempt 1 fails once the test says so, attempt 2 succeeds
RETRIES_ONCE = (
    "echo attempt-$RUNYARD_ATTEMPT; [ $RUNYARD_ATTEMPT -gt 1 ] && exit 0; "
    "while [ ! -e @GATE@ ]; do sleep 0.02; done; exit 1"
)
RETRIED = f"""
command = ["sh", "-c", "{RETRIES_ONCE}", "{{conversation}}"]
max_attempts = 2
retry_on = [1]
[backoff]
base_s = 0.05
jitter = 0
[params.conversation]
type = "str"
[openai]
input = "conversation"
"""


def retried_stream(
    start_server, write_job, jobs_dir: Path, gate: Path, backoff_s: float = 0.05
) -> tuple[ServerProcess, openai.OpenAI, Any]:
    """A streamed call to a job whose first attempt fails once `gate` exists, and is retried
    `backoff_s` later: (the server, the SDK client, the stream)."""
    job = RETRIED.replace("@GATE@", str(gate))
    write_job("retried", job.replace("base_s = 0.05", f"base_s = {backoff_s}"))
    server = start_server(jobs_dir)
    client = sdk(server)
    stream = client.chat.completions.create(model="retried", messages=ask("hello"), stream=True)
    return server, client, stream


def test_a_streamed_answer_is_never_a_failed_attempts_output(
    start_server, write_job, jobs_dir, tmp_path: Path
) -> None:
    """The first attempt failed and the second succeeded: the stream sent the first's output
    and "stop", as if it were the answer; the plain call answered the second's (a probe).
    And the same question asked again started a second run: the program ran twice."""
    gate = tmp_path / "fail-now"
    server, client, stream = retried_stream(start_server, write_job, jobs_dir, gate)
    got = []
    with pytest.raises(openai.APIError) as streamed:
        for c in stream:
            got.append(c.choices[0].delta.content or "")
            assert c.choices[0].finish_reason is None  # never a "stop" for attempt 1's text
            if "".join(got) == "attempt-1\n":
                gate.touch()  # attempt 1 fails now, once its output was streamed
    assert "".join(got) == "attempt-1\n"
    assert "attempt 2 succeeded" in streamed.value.message
    assert "ask again" in streamed.value.message
    # asked again, the same question is the same run: the program does not run a second time
    again = client.chat.completions.create(model="retried", messages=ask("hello"))
    assert again.choices[0].message.content == "attempt-2\n"
    assert len(runs_of(server, "retried")) == 1
    # asked back once: another question, or the same a third time, is a new run
    plain = client.chat.completions.create(model="retried", messages=ask("again"))
    assert plain.choices[0].message.content == "attempt-2\n"
    client.chat.completions.create(model="retried", messages=ask("hello"))
    assert len(runs_of(server, "retried")) == 3


def test_a_stream_waiting_for_a_retry_at_shutdown_ends_with_its_closed_event(
    start_server, write_job, jobs_dir, tmp_path: Path
) -> None:
    """Its first attempt failed and its retry is far off when the server is told to stop:
    the stream ends with the 503 `closed` event (ask again), not cut off after the streams'
    grace (it waited for an end nothing would tell it of any more)."""
    gate = tmp_path / "fail-now"
    server, _, stream = retried_stream(start_server, write_job, jobs_dir, gate, backoff_s=600)
    got = []
    with pytest.raises(openai.APIError) as streamed:
        for c in stream:
            got.append(c.choices[0].delta.content or "")
            if "".join(got) == "attempt-1\n":
                gate.touch()  # attempt 1 fails now; its retry is 10 minutes away
                wait_for(lambda: [r["state"] for r in runs_of(server, "retried")] == ["queued"],
                         what="the retry's wait")  # fmt: skip
                server.stop(signal.SIGTERM)
    assert "shutting down" in streamed.value.message
    assert "".join(got) == "attempt-1\n"


# With `cancel_on_disconnect`, the SDK's retry of a call that timed out, or a call asked again
# after a dropped stream, was answered with the cancellation its own first try caused, for
# ten minutes (a probe and its review).


def test_a_retry_of_a_call_whose_going_away_cancelled_its_run_starts_anew(
    start_server, gated, jobs_dir
) -> None:
    gate = gated("cancelling", extra="cancel_on_disconnect = true\n")
    server = start_server(jobs_dir)
    url, body = f"{server.url}/v1/chat/completions", {"model": "cancelling", "messages": ask("q")}
    with pytest.raises(httpx.ReadTimeout):  # the first try, given up by its caller
        web.post(url, json=body, timeout=httpx.Timeout(10, read=0.5))
    wait_for(lambda: [r["state"] for r in runs_of(server, "cancelling")] == ["cancelled"],
             what="the first try's run cancelled")  # fmt: skip
    gate.touch()
    retry = web.post(url, json=body, headers={"x-stainless-retry-count": "1"}, timeout=60)
    assert retry.status_code == 200, retry.text
    assert retry.json()["choices"][0]["message"]["content"] == "part one\npart two: user: q\n"
    assert sorted(r["state"] for r in runs_of(server, "cancelling")) == ["cancelled", "succeeded"]
    # a retry of a call whose run goes on still attaches to it, with or without the option
    attached = web.post(url, json=body, headers={"x-stainless-retry-count": "2"}, timeout=60)
    assert attached.headers["idempotent-replayed"] == "true"
    assert len(runs_of(server, "cancelling")) == 2


def test_a_first_try_going_away_leaves_the_run_its_retry_waits_on(
    start_server, gated, jobs_dir
) -> None:
    """The SDK retries a call that timed out at once, and the server hears of the first try's
    going only when its connection closes: the retry had attached to the run, and the first
    try's going cancelled it under the retry, answered `cancelled` (a probe). Only the last
    caller's going cancels it."""
    gate = gated("cancelling", extra="cancel_on_disconnect = true\n")
    server = start_server(jobs_dir)
    body = json.dumps({"model": "cancelling", "messages": ask("q")}).encode()
    first = socket.create_connection(("127.0.0.1", server.port))
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    first.sendall(head + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    wait_for(lambda: len(runs_of(server, "cancelling")) == 1, what="the first try's run")
    retry = sdk(server).chat.completions.with_streaming_response.create(
        model="cancelling", messages=ask("q"), stream=True,
        extra_headers={"x-stainless-retry-count": "1"},
    )  # fmt: skip
    with retry as streamed:
        assert streamed.headers["idempotent-replayed"] == "true"  # attached, and waiting
        first.close()  # the first try goes
        wait_for(lambda: '"status":499' in server.log_path.read_text(), what="heard gone")
        gate.touch()
        said = "".join(c.choices[0].delta.content or "" for c in streamed.parse() if c.choices)
    assert said == "part one\npart two: user: q\n"
    assert [r["state"] for r in runs_of(server, "cancelling")] == ["succeeded"]


LOUD = """
command = ["sh", "-c", "yes a | head -c 3000000; @WAIT@; echo end", "{conversation}"]
[params.conversation]
type = "str"
[openai]
input = "conversation"
cancel_on_disconnect = true
"""


def test_asked_again_after_a_drop_that_cancelled_its_run_starts_anew(
    start_server, write_job, jobs_dir, tmp_path: Path
) -> None:
    """A review: a stream dropped for not reading (told to ask again) whose going away then
    cancelled its run (`cancel_on_disconnect`) had the same question, asked again, attach to
    that cancelled run, answered `cancelled`."""
    gate = tmp_path / "go"
    wait = f"while [ ! -e {gate} ]; do sleep 0.02; done"
    write_job("loud", LOUD.replace("@WAIT@", wait))
    server = start_server(jobs_dir, env={"RUNYARD_STREAM_SEND_TIMEOUT_S": "1",
                                         "RUNYARD_HEARTBEAT_S": "1"})  # fmt: skip
    body = json.dumps({"model": "loud", "stream": True, "messages": ask("hi")}).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and reads nothing
    sock.connect(("127.0.0.1", server.port))
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    sock.sendall(head + b"content-length: %d\r\n\r\n%s" % (len(body), body))
    try:
        wait_for(lambda: [r["state"] for r in runs_of(server, "loud")] == ["cancelled"],
                 timeout=60, what="the dropped stream's run cancelled")  # fmt: skip
    finally:
        sock.close()
    gate.touch()
    again = web.post(f"{server.url}/v1/chat/completions", timeout=60,
                     json={"model": "loud", "messages": ask("hi")})  # fmt: skip
    assert again.status_code == 200, again.text
    assert sorted(r["state"] for r in runs_of(server, "loud")) == ["cancelled", "succeeded"]
