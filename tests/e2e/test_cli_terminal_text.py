"""A program's output and a server's text reach a terminal as text, never as commands to it (an
attacker's probe): `runyard logs ID` and `runyard run JOB` wrote the log's bytes to the
terminal as they were, so a program could set its window title, clear it, switch it to the
alternate screen or reverse a line with a bidi override, where `logs -f` and `watch` showed
the same bytes as visible escapes. So did `logs -f` when only its stderr was not a terminal,
`--json` for C1 controls and bidi overrides (JSON escapes only C0), and the bar of an upload
for its file's name; a schedule's id and the tokens file, said back, were read as markup. To
a pipe or a file the log stays its exact bytes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests import web
from tests.e2e.test_cli_hostile_server import run_json
from tests.e2e.test_client_hostile import RUN, Hostile, hostile, json_answer
from tests.support import ServerProcess, free_port, on_terminal, wait_for

pytestmark = pytest.mark.e2e
__all__ = ["hostile"]  # the fixture, used by name

CHUNK = 1024 * 1024  # what `runyard logs` asks for at a time (Client.logs)
HOSTILE = (
    b"\x1b]0;pwned\x07\x1b[2J\x1b[?1049h\x1b[31mRED\x1b[0m \xe2\x80\xaeRTL\xe2\x80\xac\x00nul"
    b" \xc2\x9bcsi\n"
)
# a two-byte character across the first chunk's end: one character, not two U+FFFD
LOG = HOSTILE + b"a" * (CHUNK - 1 - len(HOSTILE)) + "é".encode() + b"\n"
SHOWN = [b"\\x1b]0;pwned\\x07", b"\\x1b[2J", b"\\x1b[?1049h", b"\\x1b[31mRED",
         b"\\u202eRTL\\u202c", b"\\x00nul", b"\\x9bcsi", b"a\xc3\xa9"]  # fmt: skip
# what a terminal would act on, as the program wrote it
ACTED_ON = [b"\x1b]", b"\x1b[2J", b"\x1b[?1049h", b"\x1b[31m", b"\x07", b"\x00",
            "\u202e".encode(), "\u202c".encode(), "\u009b".encode(), b"\xef\xbf\xbd"]  # fmt: skip
RICH_STYLE = re.compile(rb"\x1b\[[0-9;]*m")  # the CLI's own colours (`succeeded` in green)


def write_program(tmp_path: Path, write_job) -> None:
    script = tmp_path / "hostile.py"
    script.write_text(f"import sys\nsys.stdout.buffer.write({LOG!r})\n")
    write_job("hostile", f"command = [{str(sys.executable)!r}, {str(script)!r}]\n")


def assert_shown_as_text(drawn: bytes) -> None:
    for visible in SHOWN:
        assert visible in drawn, (visible, drawn[:400])
    for acted in ACTED_ON:
        assert acted not in drawn, (acted, drawn[:400])
    assert b"\x1b" not in RICH_STYLE.sub(b"", drawn), drawn[:400]


def finished_run(server: ServerProcess) -> str:
    run_id = str(web.post(f"{server.url}/v1/runs", json={"job": "hostile"}).json()["id"])
    wait_for(
        lambda: web.get(f"{server.url}/v1/runs/{run_id}").json()["state"] == "succeeded",
        what="the run to write its log",
    )
    return run_id


def test_logs_shows_escapes_on_a_terminal_and_gives_a_pipe_the_bytes(
    start_server, write_job, jobs_dir: Path, tmp_path: Path
) -> None:
    write_program(tmp_path, write_job)
    server = start_server(jobs_dir)
    run_id = finished_run(server)

    status, drawn = on_terminal(server, "logs", run_id)
    assert status == 0, drawn[-400:]
    assert_shown_as_text(drawn)
    assert b"\x1b" not in drawn  # `logs` itself writes nothing else

    piped = subprocess.run(
        [sys.executable, "-m", "runyard", "logs", run_id, "--server", server.url],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == LOG  # tools and files are given what the program wrote


def test_run_shows_escapes_on_a_terminal(
    start_server, write_job, jobs_dir: Path, tmp_path: Path
) -> None:
    write_program(tmp_path, write_job)
    server = start_server(jobs_dir)
    status, drawn = on_terminal(server, "run", "hostile")
    assert status == 0, drawn[-400:]
    assert_shown_as_text(drawn)
    assert b"succeeded" in drawn


def test_logs_follow_shows_escapes_when_only_stdout_is_a_terminal(
    start_server, write_job, jobs_dir: Path, tmp_path: Path
) -> None:
    """stderr elsewhere (`2>errors.txt`) took away the progress bar, and with it the
    escaping: the log went to the terminal as raw bytes."""
    write_program(tmp_path, write_job)
    server = start_server(jobs_dir)
    run_id = finished_run(server)
    status, drawn = on_terminal(server, "logs", "-f", run_id, stderr_on_terminal=False)
    assert status == 0, drawn[-400:]
    assert_shown_as_text(drawn)


PROGRESS = r"""
command = ["sh", "-c", '''
p='{{"fraction":0.5,"message":"\u202eRTL \u009bcsi \u007fdel"}}'
printf '%s\n' "$p" >> "$RUNYARD_PROGRESS_FILE"
sleep 0.5
''']
description = "\u202eRTL"
"""


def test_json_on_a_terminal_escapes_what_json_leaves_as_it_is(
    start_server, write_job, jobs_dir: Path
) -> None:
    """JSON escapes C0 controls but leaves C1 controls, DEL and bidi overrides as they are:
    they are written as JSON escapes, the same JSON to any reader, piped or not."""
    write_job("progress", PROGRESS)
    server = start_server(jobs_dir)
    run_id = str(web.post(f"{server.url}/v1/runs", json={"job": "progress"}).json()["id"])
    wait_for(
        lambda: web.get(f"{server.url}/v1/runs/{run_id}").json()["state"] == "succeeded",
        what="the run to report its progress",
    )
    for args, said in (
        (("show", run_id, "--json"), [b"\\u202eRTL \\u009bcsi \\u007fdel"]),
        (("ls", "--json"), [b"\\u202eRTL \\u009bcsi \\u007fdel"]),
        (("jobs", "--json"), [b"\\u202eRTL"]),  # a job's description: C1 is refused there
    ):
        status, drawn = on_terminal(server, *args)
        assert status == 0, drawn[-400:]
        assert all(text in drawn for text in said), (args, drawn[:600])
        for acted in ("\u202e", "\u009b", "\u007f"):
            assert acted.encode() not in drawn, (args, acted)

    piped = subprocess.run(
        [sys.executable, "-m", "runyard", "show", run_id, "--json", "--server", server.url],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert json.loads(piped.stdout)["progress"]["message"] == "\u202eRTL \u009bcsi \u007fdel"


def test_an_uploaded_files_name_is_text_on_the_bar(
    start_server, write_job, jobs_dir: Path, tmp_path: Path
) -> None:
    """The bar's description was rich markup (`[red]` in a name was taken for a style and
    left out), and an escape sequence in the name reached the terminal."""
    write_job("size", 'command = ["wc", "-c", "{data}"]\n[params.data]\ntype = "file"\n')
    server = start_server(jobs_dir)
    big = tmp_path / "\x1b]0;pwned\x07[red]big.bin"
    big.write_bytes(b"\0" * (9 * 1024 * 1024))  # past the size that shows a bar
    status, drawn = on_terminal(server, "submit", "size", "-p", f"data=@{big}")
    # the server refuses a name with a control character: said in one line, after the bar
    assert status in (0, 2) and b"Traceback" not in drawn, drawn[-600:]
    assert b"\\x1b]0;pwned\\x07[red]big.bin" in drawn
    assert b"\x1b]0;pwned" not in drawn


SCHEDULE = {
    "id": "s", "job": "j", "params": {}, "cron": None, "interval_s": 60.0, "overlap": "skip",
    "catch_up": "once", "paused": True, "priority": None, "labels": {},
    "created_at": "2026-01-01T00:00:00Z", "last_fired_at": None, "next_fire_at": None,
    "fire_count": 0, "skip_count": 0, "fail_count": 0, "last_error": None, "last_run_id": None,
}  # fmt: skip


@pytest.fixture
def obliging() -> Iterator[str]:
    """A server that says yes to any change of any schedule."""

    class Handler(BaseHTTPRequestHandler):
        def do_PATCH(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.dumps(SCHEDULE).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_DELETE(self) -> None:
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_schedule_id_said_back_is_text(obliging: str) -> None:
    """`schedule pause/resume/rm` said the id typed back as rich markup: `[red]` in it was
    taken for a style and left out, an escape sequence in it was written as it was."""
    typed = "\x1b]0;pwned\x07[red]s"
    for command, said in (("pause", "paused"), ("resume", "resumed"), ("rm", "deleted")):
        done = subprocess.run(
            [sys.executable, "-m", "runyard", "schedule", command, typed, "--server", obliging],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"\\x1b]0;pwned\\x07[red]s {said}\n"


def test_the_tokens_file_named_back_is_text(tmp_path: Path) -> None:
    """`token create` named its file in rich markup: `[red]` in the path was left out."""
    file = tmp_path / "t[red]x.toml"
    made = subprocess.run(
        [sys.executable, "-m", "runyard", "token", "create", "ci", "--file", str(file)],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "COLUMNS": "1000"},
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert f"hash stored in {file}; serve with --tokens {file}" in made.stderr


def test_a_lone_surrogate_from_a_server_is_shown_not_a_traceback(hostile) -> None:
    """A server's JSON may hold "\\ud800", which no encoding writes: `show` ended in rich's
    UnicodeEncodeError, `show --json` in pydantic's serialization error, both tracebacks."""
    server: Hostile = hostile({f"/v1/runs/{RUN}": json_answer(run_json(reason="x\ud800y"))})
    for json_flag, said in (([], "reason: x\\ud800y"), (["--json"], '"reason": "x\\ud800y"')):
        done = subprocess.run(
            [sys.executable, "-m", "runyard", "show", RUN, *json_flag, "--server", server.url],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-600:]
        assert said in done.stdout
