"""The CLI against a server that is not what it claims (an attacker's probe): a detail or a
reason of 100 KB without a space held `show` for minutes of CPU, an error list of 200,000
was written whole to keep its first line, `logs -f` asked a thousand times a second for
attempts the run never had, a stream event of the wrong shape was a traceback (drawn over the
live view from its threads), and artifacts the download folder cannot take were tracebacks.
Each is a bounded wait, a short text, or one line of error."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from runyard.models import RunState
from runyard.schemas import RunView
from tests.e2e.test_client_hostile import RUN, Answer, Hostile, hostile, json_answer
from tests.e2e.test_client_hostile_answers import content, listing
from tests.support import wait_for

pytestmark = pytest.mark.e2e
__all__ = ["hostile"]  # the fixture, used by name

Make = Callable[[dict[str, Answer]], Hostile]
LONG = 100_000  # digits: rich's highlighter took minutes of CPU for them in one word
STREAM = f"/v1/runs/{RUN}/logs/stream"


def run_json(**fields: object) -> dict[str, object]:
    run = RunView(
        id=RUN, job="j", params={}, state=RunState.RUNNING, priority=0, labels={},
        batch_id=None, schedule_id=None, idempotency_key=None,
        created_at="2026-01-01T00:00:00Z", started_at=None, finished_at=None, attempt=1,
        exit_code=None, reason=None, progress=None, not_before=None, cancel_requested=False,
    )  # fmt: skip
    return {**run.model_dump(mode="json"), **fields}


def events(*sent: str) -> Answer:
    """An event stream of `sent`, ended by closing the connection (HTTP/1.0)."""

    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.end_headers()
        h.wfile.write("".join(sent).encode())

    return answer


def cli(url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runyard", *args, "--server", url],
                          capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip


def one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    """The error the CLI said, as one line (the console wraps at 80 columns)."""
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr and "Exception in thread" not in out.stderr, out.stderr
    said = " ".join(out.stderr.split())
    assert said.startswith("error"), said
    return said


def followed(server: Hostile, seconds: float, *args: str) -> list[str]:
    """The requests of `runyard ARGS` in its first `seconds` after its first stream request
    (then it is stopped)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "runyard", *args, "--server", server.url],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: any(STREAM in a for a in server.asked), what="the first stream")
        time.sleep(seconds)  # how often it asks in a while is what is measured
        asked, ended = list(server.asked), proc.poll()
    finally:
        proc.kill()
        said = proc.communicate()[1]
    assert ended is None, said  # still following
    return asked


def no_log(h: BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("X-Next-Offset", "0")
    h.send_header("Content-Length", "0")
    h.end_headers()


def test_a_long_server_text_is_shown_cut_and_at_once(hostile: Make) -> None:
    said = "\x1b]0;T\x07" + "1" * LONG

    def problem(h: BaseHTTPRequestHandler) -> None:
        data = json.dumps({"title": "t", "status": 400, "detail": said}).encode()
        h.send_response(400)
        h.send_header("Content-Type", "application/problem+json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def submitted(h: BaseHTTPRequestHandler) -> None:
        h.rfile.read(int(h.headers["Content-Length"]))
        json_answer(run_json(state="failed", reason=said, exit_code=3))(h)

    failed = run_json(id="r2", job=said, state="failed", reason=said, params={"p": said})
    server = hostile({f"/v1/runs/{RUN}/logs": no_log, f"/v1/runs/{RUN}": problem,
                      "/v1/runs/r2": json_answer(failed), "/v1/runs": submitted})  # fmt: skip
    handler = server.httpd.RequestHandlerClass  # answers GET only: `run` submits by POST
    setattr(handler, "do_POST", vars(handler)["do_GET"])  # noqa: B010
    shown = cli(server.url, "show", "r2", timeout=30)  # the run's job, params and reason
    assert shown.returncode == 0, shown.stderr
    refused = cli(server.url, "show", RUN, timeout=30)  # the problem's detail
    ended = cli(server.url, "run", "j", timeout=30)  # how the run ended
    assert ended.returncode == 3, ended.stderr
    for text in (shown.stdout, one_line_error(refused), ended.stderr):
        assert "\x1b" not in text
        assert len(text) < 4000, text[:300]  # a thousand characters a text, not 100,000
        # six characters of escapes shown as twelve, then 988 of the digits
        assert f"... ({LONG - 988:,} more characters)" in " ".join(text.split()), text[-300:]
    assert "\\x1b]0;T\\x07111" in shown.stdout


def test_a_validation_error_is_counted_never_written_whole(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """pydantic writes every error to give the first line: an answer of a million `{}` made
    18 M errors, and their text 20 GB (the client checks its answers now; the CLI says any
    such error in one line whatever raised it)."""
    import tracemalloc

    import typer
    from pydantic import BaseModel, ValidationError

    from runyard.cli.output import connected

    class Item(BaseModel):
        x: int

    class Listing(BaseModel):
        items: list[Item]

    caught = []
    for count in (200_000, 3):
        with pytest.raises(ValidationError) as failed:
            Listing.model_validate({"items": [{}] * count})
        caught.append(failed.value)
    tracemalloc.start()
    try:
        for exc in caught:
            with pytest.raises(typer.Exit) as exited, connected("http://127.0.0.1:9", None):
                raise exc
            assert exited.value.exit_code == 2
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20  # str() of the 200,000 was 31 MB
    said = " ".join(capsys.readouterr().err.split())
    assert "error: ValidationError: 200,000 validation errors for Listing error:" in said
    assert said.endswith("3 validation errors for Listing; the first: items.0.x: Field required")


def test_following_asks_for_no_attempt_the_run_does_not_have(hostile: Make) -> None:
    """Every stream ends the attempt it was asked for with the run still running: the CLI
    asked for attempt 2, 3, ... 5,994, 1,200 times a second."""

    def ended(h: BaseHTTPRequestHandler) -> None:
        asked = parse_qs(urlsplit(h.path).query).get("attempt", ["1"])[0]
        events(f'event: attempt\ndata: {{"attempt": {asked}}}\n\n',
               f'event: end\ndata: {{"state": "running", "attempt": {asked}}}\n\n')(h)  # fmt: skip

    server = hostile({STREAM: ended, f"/v1/runs/{RUN}": json_answer(run_json())})
    asked = followed(server, 4.0, "logs", RUN, "-f")
    streams = [a for a in asked if STREAM in a]
    assert all("attempt=" not in a or "attempt=1" in a for a in streams), streams[:5]
    # the run is read at a growing interval (0.2 s, 0.4 s, ... 2 s) for its next attempt
    assert len(asked) <= 12, asked


def test_a_stream_that_keeps_lagging_is_asked_again_less_and_less(hostile: Make) -> None:
    """`lagged` on every stream, nothing in it: asked again every 0.2 s, for ever."""
    lagged = events('event: lagged\ndata: {"last_id": "0"}\n\n')
    server = hostile({STREAM: lagged, f"/v1/runs/{RUN}": json_answer(run_json())})
    asked = followed(server, 4.0, "logs", RUN, "-f")
    assert len(asked) <= 6, asked  # 0.4 s, 0.8 s, 1.6 s, then every 2 s


@pytest.mark.parametrize(
    "end",
    ["event: end\ndata: {}\n\n", 'event: end\ndata: {"attempt": null, "state": "failed"}\n\n'],
)
def test_a_stream_event_of_the_wrong_shape_is_one_line_of_error(hostile: Make, end: str) -> None:
    """An `end` without its attempt was a KeyError or a TypeError: a traceback from `logs
    -f`, and one from `watch`'s thread, over its live view."""
    server = hostile({STREAM: events(end), f"/v1/runs/{RUN}/events": events(),
                      f"/v1/runs/{RUN}": json_answer(run_json(state="failed"))})  # fmt: skip
    for command in (["logs", RUN, "-f"], ["watch", RUN]):
        said = one_line_error(cli(server.url, *command))
        assert "ClientError: the log stream ended without naming its attempt" in said


def test_a_progress_event_of_the_wrong_shape_leaves_the_live_view_alone(hostile: Make) -> None:
    """`watch`'s progress thread died on it, its traceback written over the view."""
    progress = events("id: 1\nevent: progress\ndata: [1, 2]\n\n")
    log = events('event: attempt\ndata: {"attempt": 1}\n\n',
                 "event: log\nid: 3\ndata: hi\n\n",
                 'event: end\ndata: {"state": "succeeded", "attempt": 1}\n\n')  # fmt: skip
    server = hostile({STREAM: log, f"/v1/runs/{RUN}/events": progress,
                      f"/v1/runs/{RUN}": json_answer(run_json(state="succeeded"))})  # fmt: skip
    watched = cli(server.url, "watch", RUN)
    assert watched.returncode == 0, watched.stderr
    assert watched.stderr == "" and "hi" in watched.stdout


@pytest.mark.parametrize(
    ("names", "named", "why"),
    [(["a", "a/b"], "a", "File exists"), (["b" * 300], "b" * 300, "File name too long")],
)
def test_an_artifact_the_folder_cannot_take_is_one_line_of_error(
    hostile: Make, tmp_path: Path, names: list[str], named: str, why: str
) -> None:
    """A file and a folder of one name, or a name too long for the file system, were an
    OSError's traceback."""
    server = hostile({f"/v1/runs/{RUN}/artifacts/": content(b"abc", announced=3),
                      f"/v1/runs/{RUN}/artifacts": listing(*names, size=3)})  # fmt: skip
    said = one_line_error(cli(server.url, "artifacts", RUN, "--download", str(tmp_path)))
    # the console folds the long name: compared without the breaks
    assert said.replace(" ", "") == f"error:cannotsave'{tmp_path / named}':{why}".replace(" ", "")


def test_a_bracket_left_open_in_one_text_is_not_closed_by_the_next(hostile: Make) -> None:
    """Each text had its `[...]` escaped on its own: one that opened `[link=` and one that
    closed it, printed on one line, made a link of all between, and hid it."""
    skipped = [{"path": "[link=https://evil.example", "reason": "gone]"}]
    listing = {"artifacts": [], "skipped": skipped}
    server = hostile({f"/v1/runs/{RUN}/artifacts": json_answer(listing)})
    listed = cli(server.url, "artifacts", RUN)
    assert listed.returncode == 0, listed.stderr
    assert "not listed: '[link=https://evil.example': gone]" in listed.stderr, listed.stderr


def test_a_download_into_a_folder_replaces_nothing_unless_asked(hostile, tmp_path: Path) -> None:
    """The server names the files: a `.bashrc` downloaded into a home replaced it."""
    server = hostile({f"/v1/runs/{RUN}/artifacts/": content(b"evil", announced=4),
                      f"/v1/runs/{RUN}/artifacts": listing(".bashrc", size=4)})  # fmt: skip
    (tmp_path / ".bashrc").write_bytes(b"mine")
    out = cli(server.url, "artifacts", RUN, "--download", str(tmp_path))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out
    assert "not overwritten" in " ".join(out.stderr.split())
    assert (tmp_path / ".bashrc").read_bytes() == b"mine"
    out = cli(server.url, "artifacts", RUN, "--download", str(tmp_path), "--overwrite")
    assert out.returncode == 0, out
    assert (tmp_path / ".bashrc").read_bytes() == b"evil"


SCHEDULE = {
    "id": "s1", "job": "j", "params": {}, "cron": None, "interval_s": None, "overlap": "skip",
    "catch_up": "none", "paused": False, "priority": None, "labels": {},
    "created_at": "2026-01-01T00:00:00Z", "last_fired_at": None, "next_fire_at": None,
    "fire_count": 0, "skip_count": 0, "fail_count": 0, "last_error": None, "last_run_id": None,
}  # fmt: skip
JOB = {
    "name": "j", "description": "", "command": ["true"], "params_schema": {"properties": 5},
    "timeout_s": None, "kill_grace_s": 5.0, "max_attempts": 1, "retry_on": [],
    "concurrency": None, "priority": 0, "max_queue": None, "workspace": "empty",
    "artifacts": [],
}  # fmt: skip


def test_answers_of_the_right_shape_and_odd_values_are_shown_without_a_traceback(
    hostile: Make,
) -> None:
    """A probe: a schedule with neither `cron` nor `interval_s`, a job whose params schema
    has `properties: 5`, a run nested 260 levels deep shown as JSON: each was a traceback."""
    deep: object = 1
    for _ in range(260):
        deep = {"a": deep}
    server = hostile({
        "/v1/schedules": json_answer({"schedules": [SCHEDULE], "next_cursor": None}),
        "/v1/jobs": json_answer({"jobs": [JOB], "errors": {}}),
        f"/v1/runs/{RUN}": json_answer(run_json(params=deep)),
    })  # fmt: skip
    listed = cli(server.url, "schedule", "ls")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    assert "s1" in listed.stdout
    jobs = cli(server.url, "jobs")
    assert jobs.returncode == 0 and "Traceback" not in jobs.stderr, jobs.stderr
    said = one_line_error(cli(server.url, "show", RUN, "--json"))
    assert "cannot be written as JSON" in said


def test_a_batch_is_shown_with_no_more_states_nor_rows_than_there_can_be(hostile: Make) -> None:
    """`runyard batches` against a server sending 50,000 states for a batch (687 KB printed)
    and 5,000 batches for a page of 5 (every row drawn; `runyard ls` too): runyard's six
    states at most, and the rows asked for."""
    batch = {"id": "b1", "job": "j", "size": 3, "created_at": "2026-01-01T00:00:00Z",
             "counts": {f"s{i:05d}": 1 for i in range(50_000)}, "done": False,
             "idempotency_key": None}  # fmt: skip
    rows = [{**batch, "id": f"batch-{i:05d}", "counts": {"queued": 1}} for i in range(5_000)]
    page = {"batches": rows, "next_cursor": None}
    runs = {"runs": [run_json(id=f"run-{i:05d}") for i in range(5_000)], "next_cursor": None}
    server = hostile({"/v1/batches/b1": json_answer(batch), "/v1/batches": json_answer(page),
                      "/v1/runs": json_answer(runs)})  # fmt: skip
    shown = cli(server.url, "batches", "show", "b1")
    assert shown.returncode == 0, shown.stderr
    said = " ".join(shown.stdout.split())
    assert said.endswith(f"s00004 1, s00005 1, and {50_000 - len(RunState)} more"), said[-200:]
    assert len(shown.stdout) < 1000
    listed = cli(server.url, "batches", "ls", "--limit", "5")
    assert listed.returncode == 0, listed.stderr
    assert "batch-00004" in listed.stdout and "batch-00005" not in listed.stdout
    ran = cli(server.url, "ls", "--limit", "5")  # `runyard ls` alike
    assert ran.returncode == 0, ran.stderr
    assert "run-00004" in ran.stdout and "run-00005" not in ran.stdout


def test_json_and_counts_are_bounded_too_and_a_limit_is_at_least_one(hostile: Make) -> None:
    """`--json` wrote every row of a page (1,100,005 lines for `--limit 1`), a count of
    10**4000 was written whole, and `--limit -1` read a page less its last row (a probe)."""
    batch = {"id": "b1", "job": "j", "size": 3, "created_at": "2026-01-01T00:00:00Z",
             "counts": {"queued": 10**4000}, "done": False, "idempotency_key": None}  # fmt: skip
    rows = [{**batch, "id": f"batch-{i:05d}", "counts": {"queued": 1}} for i in range(3_000)]
    runs = {"runs": [run_json(id=f"run-{i:05d}") for i in range(3_000)], "next_cursor": None}
    page = {"batches": rows, "next_cursor": None}
    server = hostile({"/v1/batches/b1": json_answer(batch), "/v1/runs": json_answer(runs),
                      "/v1/batches": json_answer(page)})  # fmt: skip
    for args, key in ((("batches", "ls"), "batches"), (("ls",), "runs")):
        listed = cli(server.url, *args, "--limit", "2", "--json")
        assert listed.returncode == 0, listed.stderr
        assert len(json.loads(listed.stdout)[key]) == 2
        refused = cli(server.url, *args, "--limit", "0")
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    shown = cli(server.url, "batches", "show", "b1")
    assert shown.returncode == 0, shown.stderr
    assert "queued over 1e+15" in shown.stdout and len(shown.stdout) < 200, shown.stdout


def test_an_argument_that_makes_no_url_is_one_line_of_error(hostile: Make) -> None:
    """A run or batch id of 100,000 characters: httpx's InvalidURL, a traceback (a probe)."""
    server = hostile({})
    for args in (("show", "A" * 100_000), ("batches", "ls", "--cursor", "A" * 100_000)):
        said = one_line_error(cli(server.url, *args))
        assert "no request can be made of these arguments" in said, said
