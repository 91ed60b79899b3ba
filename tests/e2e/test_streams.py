"""Live logs and events for many watchers: exact, resumable, never held up by a slow one."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path

import httpx
import pytest

from runyard.models import RunState
from tests import web
from tests.sse import Watched, watch_events, watch_log
from tests.support import open_gate, wait_for

pytestmark = pytest.mark.e2e

CHATTER = Path(__file__).parent / "programs" / "chatter.py"


@pytest.fixture
def chatter_jobs(write_job, jobs_dir: Path) -> Path:
    write_job(
        "chatter",
        f'command = ["{sys.executable}", "{CHATTER}", "{{lines}}", "{{mode}}", "{{width}}", '
        '"{pause}"]\n'
        '[params.lines]\ntype = "int"\ndefault = 1000\n'
        '[params.mode]\ntype = "enum"\nchoices = ["wait", "now"]\ndefault = "now"\n'
        '[params.width]\ntype = "int"\ndefault = 40\n'
        '[params.pause]\ntype = "float"\ndefault = 0.001\n',
    )
    write_job(
        "ticker",
        'command = ["sh", "-c", "i=0; while [ $i -lt 600 ]; do echo tick $i; i=$((i+1)); '
        'sleep 0.1; done"]\n',
    )
    return jobs_dir


def log_bytes(server, run_id: str, attempt: int = 1) -> bytes:
    return (server.data_dir / "runs" / run_id / f"attempt-{attempt}.log").read_bytes()


def watchers(server) -> int:
    return int(web.get(f"{server.url}/health").json()["streams"]["watchers"])


def test_hundred_watchers_get_the_byte_identical_log(start_server, chatter_jobs) -> None:
    server = start_server(chatter_jobs)
    with server.client() as c:
        run = c.submit("chatter", {"lines": 3000, "mode": "wait"})
        wait_for(lambda: c.run(run.id).state is RunState.RUNNING, what="running")
    url = f"{server.url}/v1/runs/{run.id}/logs/stream"

    async def main() -> list:
        limits = httpx.Limits(max_connections=200)
        async with web.AsyncClient(timeout=60, limits=limits) as client:
            tasks = [asyncio.create_task(watch_log(client, url)) for _ in range(100)]
            await asyncio.to_thread(wait_for, lambda: watchers(server) >= 100, 30, "watchers")
            open_gate(server.data_dir, run.id)
            return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    expected = log_bytes(server, run.id)
    assert len(expected) > 50_000
    assert b"\xff\xfe" in expected
    for got in results:
        assert got.end is not None
        assert got.end["state"] == "succeeded"
        assert bytes(got.data) == expected


def test_slow_watcher_is_dropped_without_delaying_others(start_server, chatter_jobs) -> None:
    server = start_server(chatter_jobs)
    with server.client() as c:
        # ~12 MB at a pace a reading client follows; the one that never reads falls far behind
        params = {"lines": 60_000, "mode": "wait", "width": 200, "pause": 0.004}
        run = c.submit("chatter", params)
        wait_for(lambda: c.run(run.id).state is RunState.RUNNING, what="running")
    path = f"/v1/runs/{run.id}/logs/stream"
    # A watcher that never reads: a raw connection with a tiny receive buffer.
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", server.port))
    slow.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())

    async def main() -> list:
        async with web.AsyncClient(timeout=120) as client:
            tasks = [asyncio.create_task(watch_log(client, server.url + path)) for _ in range(3)]
            await asyncio.to_thread(wait_for, lambda: watchers(server) >= 4, 30, "watchers")
            open_gate(server.data_dir, run.id)
            return await asyncio.gather(*tasks)

    fast = asyncio.run(main())
    expected = log_bytes(server, run.id)
    assert len(expected) > 12 * 1024 * 1024  # far more than the socket buffers can hold
    # every fast watcher got the whole log and its end before a byte of the slow one was read
    for got in fast:
        assert got.end is not None
        assert bytes(got.data) == expected
    assert web.get(f"{server.url}/health").json()["streams"]["lagged_total"] >= 1
    slow.settimeout(30)
    received = bytearray()
    while b"event: lagged" not in received:
        chunk = slow.recv(1 << 20)
        if not chunk:
            break
        received += chunk
    slow.close()
    assert b"event: lagged" in received  # it was told, and may resume from its last id


def test_resume_log_with_last_event_id_is_exact(start_server, chatter_jobs) -> None:
    server = start_server(chatter_jobs)
    with server.client() as c:
        run = c.submit("chatter", {"lines": 2000, "mode": "wait"})
        wait_for(lambda: c.run(run.id).state is RunState.RUNNING, what="running")
    url = f"{server.url}/v1/runs/{run.id}/logs/stream"

    async def main():
        async with web.AsyncClient(timeout=60) as client:
            first = asyncio.create_task(watch_log(client, url, stop_after_bytes=30_000))
            await asyncio.to_thread(wait_for, lambda: watchers(server) >= 1, 30, "watcher")
            open_gate(server.data_dir, run.id)
            part = await first  # dropped mid-stream, while the program still writes
            assert part.end is None
            rest = await watch_log(client, url, last_id=part.last_id)
            return part, rest

    part, rest = asyncio.run(main())
    assert rest.end is not None
    assert bytes(part.data) + bytes(rest.data) == log_bytes(server, run.id)
    # ?offset= resumes the same way, here on the finished run's replay
    offset = len(part.data) // 2

    async def replay():
        async with web.AsyncClient(timeout=60) as client:
            return await watch_log(client, f"{url}?offset={offset}")

    tail = asyncio.run(replay())
    assert bytes(tail.data) == log_bytes(server, run.id)[offset:]
    assert tail.end is not None
    assert tail.end["state"] == "succeeded"


def test_events_resume_by_sequence_number(start_server, chatter_jobs) -> None:
    server = start_server(chatter_jobs)
    with server.client() as c:
        run = c.submit("chatter", {"lines": 3000, "mode": "wait"})
        wait_for(lambda: c.run(run.id).state is RunState.RUNNING, what="running")
    url = f"{server.url}/v1/runs/{run.id}/events"

    async def main():
        async with web.AsyncClient(timeout=60) as client:
            first = asyncio.create_task(watch_events(client, url, stop_after=5))
            await asyncio.to_thread(wait_for, lambda: watchers(server) >= 1, 30, "watcher")
            open_gate(server.data_dir, run.id)
            part = await first
            rest = await watch_events(client, url, last_id=part.last_id)
            full = await watch_events(client, url)
            return part, rest, full

    part, rest, full = asyncio.run(main())
    seqs = [e["seq"] for e in part.events + rest.events]
    assert seqs == list(range(1, len(seqs) + 1))  # no gap, no repeat
    assert part.events + rest.events == full.events
    assert rest.end is not None
    assert rest.end["state"] == "succeeded"
    kinds = [e["kind"] for e in full.events]
    assert kinds[:2] == ["state", "state"]
    assert kinds[-1] == "state"
    assert kinds.count("progress") == 31  # 30 during the run and the final "done"
    assert full.events[-1]["data"]["to"] == "succeeded"


BURST = """
command = ["sh", "-c", '''
cd "$RUNYARD_WORKSPACE"
i=0; while [ $i -lt 2500 ]; do echo '{{"fraction": 0.5}}' >> burst; i=$((i+1)); done
while [ ! -e go ]; do sleep 0.02; done
cat burst >> "$RUNYARD_PROGRESS_FILE"
''']
"""


def test_live_watchers_get_the_end_after_a_burst_longer_than_a_page(
    start_server, write_job, jobs_dir: Path
) -> None:
    """2500 progress lines at once, read in one go: the events after the first page (a
    thousand), the run's last state among them, were left for nobody to send; its live
    watchers never heard it end. Now such a burst is coalesced to its last lines, and every
    watcher hears the same of it, and the end."""
    write_job("burst", BURST)
    server = start_server(jobs_dir)
    with server.client() as c:
        run = c.submit("burst")
        wait_for(lambda: c.run(run.id).state is RunState.RUNNING, what="running")
    url = f"{server.url}/v1/runs/{run.id}/events"

    async def main():
        async with web.AsyncClient(timeout=60) as client:
            live = [asyncio.create_task(watch_events(client, url)) for _ in range(2)]
            await asyncio.to_thread(wait_for, lambda: watchers(server) >= 2, 30, "watchers")
            open_gate(server.data_dir, run.id)
            return await asyncio.gather(*live)

    watched = asyncio.run(main())
    for seen in watched:
        assert seen.end is not None and seen.end["state"] == "succeeded"
        kinds = [e["kind"] for e in seen.events]
        assert 0 < kinds.count("progress") < 2500  # coalesced, not one event a line
        assert seen.events[-2]["data"] == {"fraction": 0.5, "attempt": 1}
        assert seen.events[-1]["data"]["to"] == "succeeded"
    assert watched[0].events == watched[1].events


def test_websocket_events_resume(start_server, chatter_jobs) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    server = start_server(chatter_jobs)
    with server.client() as c:
        run = c.submit("chatter", {"lines": 500})
        server.wait_run(c, run.id)
    ws_url = f"ws://127.0.0.1:{server.port}/v1/runs/{run.id}/ws"
    with connect(ws_url) as ws:
        messages = [__import__("json").loads(m) for m in ws]
    assert messages[-1]["type"] == "end"
    seqs = [m["seq"] for m in messages[:-1]]
    assert seqs == list(range(1, len(seqs) + 1))
    with connect(f"{ws_url}?after=3") as ws:
        resumed = [__import__("json").loads(m) for m in ws]
    assert [m["seq"] for m in resumed[:-1]] == seqs[3:]
    refused = {}  # before accepting: answered as over HTTP (a close reached it as a bare 403)
    for name, url in [
        ("unknown run", f"ws://127.0.0.1:{server.port}/v1/runs/01NOSUCHRUN0000000000000000/ws"),
        ("bad resume point", f"{ws_url}?after=-1"),
    ]:
        with pytest.raises(InvalidStatus) as info:
            connect(url)
        answer = info.value.response
        assert answer.headers["content-type"] == "application/problem+json"
        refused[name] = (answer.status_code, json.loads(answer.body))
    assert refused["unknown run"][0] == 404
    assert refused["bad resume point"][0] == 422
    assert refused["bad resume point"][1]["errors"][0]["field"] == "query.after"

    def sessions() -> list[int] | None:  # as logged and counted (every one was a 500)
        lines = [json.loads(line) for line in server.log_path.read_text().splitlines()
                 if line.startswith("{")]  # fmt: skip
        found = [e["status"] for e in lines if e.get("event") == "request" and e["method"] == "WS"]
        return found if len(found) == 4 else None

    assert wait_for(sessions, what="the four sessions logged") == [101, 101, 404, 422]


def test_bad_progress_and_binary_output_never_break_anything(start_server, chatter_jobs) -> None:
    server = start_server(chatter_jobs)
    with server.client() as c:
        run = c.submit("chatter", {"lines": 300})
        done = server.wait_run(c, run.id)
    assert done.state is RunState.SUCCEEDED
    assert done.progress == {"fraction": 1.0, "message": "done"}
    assert done.progress_skipped == 4  # not JSON, an array, not UTF-8, 200 kB long

    async def main():
        async with web.AsyncClient(timeout=60) as client:
            base = f"{server.url}/v1/runs/{run.id}"
            return await watch_log(client, f"{base}/logs/stream"), await watch_events(
                client, f"{base}/events"
            )

    logs, events = asyncio.run(main())
    assert bytes(logs.data) == log_bytes(server, run.id)
    assert events.end is not None
    assert [e["data"]["message"] for e in events.events if e["kind"] == "progress"][-1] == "done"


def test_progress_of_an_unwatched_running_run_is_current_on_read(start_server, write_job, jobs_dir):
    # braces are doubled: single ones would be argv placeholders
    write_job(
        "halfway",
        r"""command = ['sh', '-c', 'printf "%s\n" "$0" >> "$RUNYARD_PROGRESS_FILE"; sleep 60',"""
        r"""'{{"fraction": 0.5, "message": "half"}}']""",
    )
    server = start_server(jobs_dir)
    with server.client() as c:
        run = c.submit("halfway")
        got = wait_for(lambda: c.run(run.id).progress, what="progress")
        assert got == {"fraction": 0.5, "message": "half"}
        c.cancel(run.id)


def test_the_feed_tells_of_every_run_its_states_and_its_progress(start_server) -> None:
    from httpx_sse import connect_sse

    server = start_server()
    seen: list[tuple[str, dict]] = []
    body = {"job": "simulate", "params": {"ticks": 100, "pace": 0.01}}
    with (
        web.Client(base_url=server.url, timeout=30) as http,
        connect_sse(http, "GET", "/v1/events") as source,
    ):
        run_id = None
        for sse in source.iter_sse():
            if sse.event == "ready":  # subscribed: nothing from here on is missed
                run_id = http.post("/v1/runs", json=body).json()["id"]
                continue
            seen.append((sse.event, json.loads(sse.data)))
            if sse.event == "run" and seen[-1][1]["state"] == "succeeded":
                break
    mine = [(kind, data) for kind, data in seen if data.get("id") == run_id]
    assert mine[0] == ("submitted", {"id": run_id, "job": "simulate"})
    states = [d["state"] for k, d in mine if k == "run"]
    assert states == ["running", "succeeded"]
    fractions = [d["progress"]["fraction"] for k, d in mine if k == "progress"]
    assert fractions and fractions[-1] == 1.0
    assert fractions == sorted(fractions)


RETRIED = (
    'command = ["sh", "-c", "echo attempt $RUNYARD_ATTEMPT of a log; [ $RUNYARD_ATTEMPT -gt 1 ] '
    '&& exit 0; while [ ! -e go ]; do sleep 0.02; done; exit 1"]\n'
    "max_attempts = 2\nretry_on = [1]\n[backoff]\nbase_s = 0.05\njitter = 0\n"
)


def test_a_log_stream_resumes_in_the_attempt_it_was_reading(start_server, write_job, jobs_dir):
    """A retry's log ids went on from 0 like the first attempt's: a client reconnecting with
    an id of attempt 1 (as an EventSource does) was served attempt 2 from that offset, its
    first bytes skipped without a word (a probe). Past attempt 1 an id is ATTEMPT:OFFSET."""
    write_job("retried", RETRIED)
    server = start_server(jobs_dir)
    run_id = web.post(f"{server.url}/v1/runs", json={"job": "retried"}).json()["id"]
    url = f"{server.url}/v1/runs/{run_id}/logs/stream"

    async def main() -> tuple[Watched, Watched, Watched, Watched]:
        async with web.AsyncClient(timeout=60) as client:
            first = await watch_log(client, url, stop_after_bytes=len("attempt 1 of a log\n"))
            open_gate(server.data_dir, run_id)
            run = f"{server.url}/v1/runs/{run_id}"
            succeeded = lambda: web.get(run).json()["state"] == "succeeded"  # noqa: E731
            await asyncio.to_thread(wait_for, succeeded, 30, "the retry's success")
            again = await watch_log(client, url, last_id=first.last_id)
            latest = await watch_log(client, url, stop_after_bytes=8)
            rest = await watch_log(client, url, last_id=latest.last_id)
            return first, again, latest, rest

    first, again, latest, rest = asyncio.run(main())
    assert first.last_id == "19" and bytes(first.data) == b"attempt 1 of a log\n"
    assert again.data == b"" and again.end is not None and again.end["attempt"] == 1
    assert latest.last_id is not None and latest.last_id.startswith("2:")
    assert bytes(latest.data) + bytes(rest.data) == log_bytes(server, run_id, 2)
    assert log_bytes(server, run_id, 2) == b"attempt 2 of a log\n"


def test_resume_points_are_validated_before_any_work_and_published(
    start_server, chatter_jobs
) -> None:
    """Defect 17: `?offset=1e20` reached a file seek (an unhandled error); Last-Event-ID was
    declared nullable. Offsets, seqs and Last-Event-ID are bounded, refused with a 422 that
    names them, and the OpenAPI document declares exactly what is accepted."""
    server = start_server(chatter_jobs)
    with server.client() as c:
        run = c.submit("chatter", {"lines": 3})
        server.wait_run(c, run.id)
    base = f"{server.url}/v1/runs/{run.id}"
    with web.Client(timeout=30) as http:
        for path, name in (("logs/stream", "offset"), ("events", "after")):
            for bad in ("1e20", "100000000000000000000", "-1", "1.5"):
                resp = http.get(f"{base}/{path}", params={name: bad})
                assert resp.status_code == 422, (path, bad)
                assert name in resp.json()["detail"]
            for bad in ("abc", "1e5", "-3", "1234567890123456789", "1 2", "١٢"):
                resp = http.get(f"{base}/{path}", headers={"Last-Event-ID": bad.encode()})
                assert resp.status_code == 422, (path, bad)
                assert "Last-Event-ID" in resp.json()["detail"]
        # the largest accepted resume points are answered: a finished stream past its end
        top = "999999999999999999"
        resp = http.get(f"{base}/logs/stream", params={"offset": top})
        assert resp.status_code == 200 and "event: end" in resp.text
        resp = http.get(f"{base}/logs/stream", headers={"Last-Event-ID": top})
        assert resp.status_code == 200 and "event: end" in resp.text
        assert "event: log" not in resp.text
        # whitespace around a header's value is no part of it (a probe: `5 ` was a 422);
        # httpx sends none, so the request is written by hand
        for path in ("logs/stream", "events"):
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
                sock.sendall(f"GET /v1/runs/{run.id}/{path} HTTP/1.1\r\nHost: x\r\n"
                             f"Last-Event-ID:  {top} \t\r\n\r\n".encode())  # fmt: skip
                said = b""
                while b"event: end" not in said and (got := sock.recv(65536)):
                    said += got
            assert said.startswith(b"HTTP/1.1 200") and b"event: end" in said, (path, said)
        resp = http.get(f"{base}/events", params={"after": top})
        assert resp.status_code == 200 and "event: end" in resp.text
        spec = http.get(f"{server.url}/openapi.json").json()
    for path, name in (("logs/stream", "offset"), ("events", "after")):
        op = spec["paths"][f"/v1/runs/{{run_id}}/{path}"]["get"]
        params = {p["name"]: p for p in op["parameters"]}
        header = params["Last-Event-ID"]
        assert header["in"] == "header" and not header.get("required", False)
        assert header["schema"]["type"] == "string"  # never null
        pattern = "^([1-9][0-9]{0,17}:)?[0-9]{1,18}$" if path == "logs/stream" else "^[0-9]{1,18}$"
        assert header["schema"]["pattern"] == pattern
        query = params[name]["schema"]
        assert "anyOf" not in query  # never null either
        assert (query["type"], query["minimum"], query["maximum"]) == ("integer", 0, int(top))


def test_a_websocket_client_leaving_a_quiet_run_is_let_go_at_once(start_server, chatter_jobs):
    """The socket's incoming side is read all along: a client that leaves while the run says
    nothing (no event to send, so no failed send to notice it by) gives back its watcher."""
    from websockets.sync.client import connect

    server = start_server(chatter_jobs)
    with server.client() as c:
        run = c.submit("ticker")  # a minute of log lines, and no event after it starts
        wait_for(lambda: c.run(run.id).state is RunState.RUNNING, what="running")
        with connect(f"ws://127.0.0.1:{server.port}/v1/runs/{run.id}/ws") as ws:
            assert json.loads(ws.recv())["type"] == "state"
            wait_for(lambda: watchers(server) == 1, what="the socket's watcher")
        wait_for(lambda: watchers(server) == 0, 15, "the socket's watcher given back")
        assert c.run(run.id).state is RunState.RUNNING  # while the run goes on
        c.cancel(run.id)


def test_events_resumed_beyond_the_last_seq_still_end_with_the_run(start_server, chatter_jobs):
    """A resume point past every event (a client's stale or made-up id) is accepted; the
    stream sends nothing it claims to have, and still ends when the run does."""
    server = start_server(chatter_jobs)
    with server.client() as c:
        run = c.submit("chatter", {"lines": 300, "mode": "wait"})
        wait_for(lambda: c.run(run.id).state is RunState.RUNNING, what="running")
    url = f"{server.url}/v1/runs/{run.id}/events"

    async def main():
        async with web.AsyncClient(timeout=60) as client:
            task = asyncio.create_task(watch_events(client, url, last_id="999999999999999999"))
            await asyncio.to_thread(wait_for, lambda: watchers(server) >= 1, 30, "watcher")
            open_gate(server.data_dir, run.id)
            return await task

    got = asyncio.run(main())
    assert got.events == []
    assert got.end is not None and got.end["state"] == "succeeded"


def test_the_log_of_a_retry_not_started_yet_is_waited_for(start_server, write_job, jobs_dir):
    """Asked for attempt 2 while the run waits out its backoff, the stream answered at once
    with attempt 1's end under attempt 2's number (and a follower looped through attempts
    3, 4, ... that never existed)."""
    write_job(
        "twice",
        'command = ["sh", "-c", "echo try $RUNYARD_ATTEMPT; [ $RUNYARD_ATTEMPT -ge 2 ]"]\n'
        "max_attempts = 2\nretry_on = [1]\n[backoff]\nbase_s = 2\njitter = 0\n",
    )
    server = start_server(jobs_dir)
    with server.client() as c:
        run_id = c.submit("twice").id
        wait_for(lambda: (r := c.run(run_id)).attempt == 1 and r.state is RunState.QUEUED,
                 what="attempt 1 ended, the retry waiting")  # fmt: skip
        items = list(c.stream_log(run_id, attempt=2))
    text = b"".join(i.data for i in items if hasattr(i, "data") and isinstance(i.data, bytes))
    assert text == b"try 2\n"
    end = items[-1]
    assert end.kind == "end"
    assert (end.data["attempt"], end.data["state"]) == (2, "succeeded")


def test_a_queued_run_cancelled_ends_its_log_stream_as_attempt_0(
    start_server, write_job, jobs_dir
) -> None:
    """A probe: its log stream announced an attempt 1 it never had and ended as attempt 1,
    while its events, and the run itself, said attempt 0."""
    write_job("hold", 'command = ["sleep", "60"]\nkill_grace_s = 0\n')
    server = start_server(jobs_dir, capacity=1)
    with server.client() as c:
        holding = c.submit("hold")
        queued = c.submit("hold")  # the one slot is taken: it waits
        assert c.cancel(queued.id).state is RunState.CANCELLED
        assert c.run(queued.id).attempt == 0
        stream = web.get(f"{server.url}/v1/runs/{queued.id}/logs/stream", timeout=10)
        events = web.get(f"{server.url}/v1/runs/{queued.id}/events", timeout=10)
        c.cancel(holding.id)
        server.wait_run(c, holding.id)
    ends = []
    for text in (stream.text, events.text):
        lines = text.splitlines()
        assert "event: attempt" not in lines  # no attempt is announced: there is none
        ends.append(json.loads(lines[lines.index("event: end") + 1].removeprefix("data: ")))
    assert [(e["state"], e["attempt"]) for e in ends] == [("cancelled", 0)] * 2
