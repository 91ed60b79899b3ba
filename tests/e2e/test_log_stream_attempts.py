"""A log stream asked for an attempt the run does not have (`?attempt=`, or the attempt a
Last-Event-ID names) is a 404 naming it, as a log page is. The stream used to answer 200,
wait until the run was over, then say the phantom attempt ended with the real one's state and
exit code. The next attempt is never refused (a watcher that saw the run queued for a retry
asks for it, and the run may end first): it is waited for, and if the run ends without it,
the stream's `end` names the run's last attempt."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse

from tests import web
from tests.support import ServerProcess, open_gate, wait_for

pytestmark = pytest.mark.e2e

GATED = (  # attempt 1 waits for `go`, then exits {code}; a later attempt exits 0 at once
    'command = ["sh", "-c", "echo attempt $RUNYARD_ATTEMPT of a log; '
    '[ $RUNYARD_ATTEMPT -gt 1 ] && exit 0; while [ ! -e go ]; do sleep 0.02; done; exit {code}"]\n'
)
RETRIES = "max_attempts = 2\nretry_on = [1]\n[backoff]\nbase_s = 0.05\njitter = 0\n"
JOBS = {
    "once": 'command = ["sh", "-c", "echo only-one-attempt; exit 3"]\n',
    "single": GATED.format(code=0),
    "retried": GATED.format(code=1) + RETRIES,
    "lucky": GATED.format(code=0) + RETRIES,
}


@pytest.fixture
def server(start_server, write_job, jobs_dir) -> ServerProcess:
    for name, text in JOBS.items():
        write_job(name, text)
    return start_server(jobs_dir)


def submit(server: ServerProcess, job: str, state: str) -> str:
    run_id = str(web.post(f"{server.url}/v1/runs", json={"job": job}).json()["id"])
    wait_for(lambda: web.get(f"{server.url}/v1/runs/{run_id}").json()["state"] == state)
    return run_id


def go(server: ServerProcess, run_id: str) -> None:
    open_gate(server.data_dir, run_id)


def assert_refused(server: ServerProcess, run_id: str, asked: int, **request: Any) -> None:
    """A 404 naming the attempt, before any stream: what the log page answers for it."""
    base = f"{server.url}/v1/runs/{run_id}"
    resp = web.get(f"{base}/logs/stream", timeout=10, **request)
    assert resp.status_code == 404, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    problem = resp.json()
    page = web.get(f"{base}/logs", params={"attempt": asked}).json()
    assert problem["detail"] == page["detail"] == f"run {run_id} has no attempt {asked}"
    field = "header.Last-Event-ID" if "headers" in request else "query.attempt"
    assert problem["errors"] == [{"field": field, "message": problem["detail"]}]


async def followed(
    server: ServerProcess, run_id: str, attempt: int, opened: asyncio.Event
) -> list[tuple[str, Any]]:
    """The stream of `attempt`, once it answered 200 (`opened`), as (event, data) to its end."""
    url = f"{server.url}/v1/runs/{run_id}/logs/stream"
    got: list[tuple[str, Any]] = []
    async with (
        web.AsyncClient(timeout=30) as client,
        aconnect_sse(client, "GET", url, params={"attempt": attempt}) as source,
    ):
        assert source.response.status_code == 200
        opened.set()
        async for sse in source.aiter_sse():
            got.append((sse.event, sse.data if sse.event == "log" else json.loads(sse.data)))
            if sse.event == "end":
                break
    return got


def follow_while(
    server: ServerProcess, run_id: str, attempt: int, then: str
) -> list[tuple[str, Any]]:
    """Follow `attempt`; once its stream is open, let the run's first attempt end."""

    async def main() -> list[tuple[str, Any]]:
        opened = asyncio.Event()
        watcher = asyncio.create_task(followed(server, run_id, attempt, opened))
        await asyncio.wait_for(opened.wait(), 30)
        go(server, then)
        return await asyncio.wait_for(watcher, 30)

    return asyncio.run(main())


def test_an_attempt_an_ended_run_never_had_is_404(server: ServerProcess) -> None:
    run_id = submit(server, "once", "failed")
    assert_refused(server, run_id, 7, params={"attempt": 7})
    assert_refused(server, run_id, 7, headers={"Last-Event-ID": "7:0"})
    assert_refused(server, run_id, 3, params={"attempt": 3})
    # its one attempt is answered as ever
    with httpx.Client(timeout=10) as http:
        text = http.get(f"{server.url}/v1/runs/{run_id}/logs/stream?attempt=1").text
        # the next is never refused (a watcher that saw it queued for a retry asks for it,
        # and the run may end first): its stream ends at once, naming the last attempt
        following = http.get(f"{server.url}/v1/runs/{run_id}/logs/stream?attempt=2").text
    assert "event: attempt" in text
    assert 'data: {"state": "failed", "attempt": 1, "exit_code": 3' in text
    assert "event: attempt" not in following
    assert 'data: {"state": "failed", "attempt": 1, "exit_code": 3' in following


def test_an_attempt_past_a_running_runs_next_is_404(server: ServerProcess) -> None:
    single = submit(server, "single", "running")
    assert_refused(server, single, 3, params={"attempt": 3})  # past the next
    retried = submit(server, "retried", "running")  # may retry once: attempt 2, never 3
    assert_refused(server, retried, 3, params={"attempt": 3})
    assert_refused(server, retried, 7, headers={"Last-Event-ID": "7:0"})
    for run_id in (single, retried):
        assert web.post(f"{server.url}/v1/runs/{run_id}/cancel").status_code == 202


def test_the_retry_a_stream_waits_for_is_followed(server: ServerProcess) -> None:
    run_id = submit(server, "retried", "running")
    got = follow_while(server, run_id, 2, then=run_id)
    assert got[0] == ("attempt", {"attempt": 2})
    assert "".join(d for e, d in got if e == "log") == "attempt 2 of a log\n"
    assert got[-1][0] == "end"
    assert got[-1][1]["state"] == "succeeded" and got[-1][1]["attempt"] == 2


def test_a_retry_that_never_comes_ends_the_stream_with_the_last_attempt(
    server: ServerProcess,
) -> None:
    run_id = submit(server, "lucky", "running")
    got = follow_while(server, run_id, 2, then=run_id)  # attempt 1 succeeds: no retry
    assert got == [
        ("end", {"state": "succeeded", "attempt": 1, "exit_code": 0, "reason": "exit code 0"})
    ]


def test_an_earlier_attempts_stream_ends_with_its_own_exit_code(server: ServerProcess) -> None:
    """Attempt 1 exited 1 and was retried; attempt 2 succeeded. Attempt 1's stream said
    exit code 0, its retry's."""
    run_id = submit(server, "retried", "running")
    go(server, run_id)
    wait_for(lambda: web.get(f"{server.url}/v1/runs/{run_id}").json()["state"] == "succeeded")
    with httpx.Client(timeout=10) as http:
        text = http.get(f"{server.url}/v1/runs/{run_id}/logs/stream?attempt=1").text
    end = json.loads(text.split("event: end", 1)[1].split("data: ", 1)[1].split("\r\n", 1)[0])
    assert end == {
        "state": "succeeded",
        "attempt": 1,
        "exit_code": 1,
        "reason": "attempt 1: exit code 1",
    }
