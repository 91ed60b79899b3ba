"""What the CLI shows of a server's or a program's text is shown, never acted on (an attacker's
probe): a `[/]` in a label, a job's description or an artifact's name crashed `show`, `jobs`
and `artifacts` with rich's MarkupError (a traceback, not the one-line error), a
`[link=...]` name became a hyperlink, an escape sequence in a progress message reached the
terminal, names with `?`, `#` or `%2e` could not be downloaded, and `artifacts` showed the
first 1,000 of a run's files without a word of the rest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runyard.cli.output import plain, shown
from tests import web
from tests.support import ServerProcess, on_terminal, wait_for

pytestmark = pytest.mark.e2e

MAKER = r"""
command = ["sh", "-c", '''
mkdir -p out/d out/many 'out/['
echo one > 'out/[/]'
echo two > 'out/[link=https:evil.example]click'
echo three > "out/$(printf '\342\200\256')gnp.exe"
echo four > 'out/d/x?y#z'
echo five > 'out/d/%2e%2e'
i=0; while [ $i -lt 1001 ]; do : > out/many/f$(printf %04d $i); i=$((i+1)); done
p='{{"fraction":0.3,"message":"\u001b]0;PWNED\u0007\u001b[41mred [/] x"}}'
printf '%s\n' "$p" >> "$RUNYARD_PROGRESS_FILE"
sleep 1
''']
artifacts = ["out/**"]
"""
DESCRIBED = """
description = "[/] a [bold]description[/bold]"
command = ["true"]
[params.x]
type = "enum"
choices = ["[/]", "b"]
"""
WIDE = {"COLUMNS": "400"}  # rich wraps at 80 without a terminal


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runyard", *args, "--server", server.url],
        capture_output=True, text=True, timeout=60, check=False, env={**os.environ, **WIDE},
    )  # fmt: skip


def test_what_the_cli_shows_is_text_not_markup_nor_terminal_commands(
    start_server, write_job, jobs_dir: Path, tmp_path: Path
) -> None:
    write_job("maker", MAKER)
    write_job("described", DESCRIBED)
    server = start_server(jobs_dir)
    run_id = web.post(
        f"{server.url}/v1/runs", json={"job": "maker", "labels": {"k": "[/]"}}
    ).json()["id"]
    wait_for(
        lambda: web.get(f"{server.url}/v1/runs/{run_id}").json()["state"] == "succeeded",
        what="the run to make its files",
    )

    show = cli(server, "show", run_id)
    assert show.returncode == 0, show.stderr
    assert "'k': '[/]'" in show.stdout
    jobs = cli(server, "jobs")
    assert jobs.returncode == 0, jobs.stderr
    assert "[/] a [bold]description[/bold]" in jobs.stdout
    refused = cli(server, "submit", "described", "-p", "x=zzz")
    assert refused.returncode == 2 and "error 422" in refused.stderr
    assert "[/]" in refused.stderr and "Traceback" not in refused.stderr

    listed = cli(server, "artifacts", run_id)
    assert listed.returncode == 0, listed.stderr
    assert "out/[/]" in listed.stdout
    assert "out/[link=https:evil.example]click" in listed.stdout  # a name, not a link
    assert "out/\\u202egnp.exe" in listed.stdout  # the override shown, not obeyed
    assert "\x1b" not in listed.stdout
    # every page: 1,006 files, past the first page's 1,000
    assert sum(f"out/many/f{i:04d}" in listed.stdout for i in range(1001)) == 1001

    got = cli(server, "artifacts", run_id, "--download", str(tmp_path / "dl"))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "dl" / "out" / "d" / "x?y#z").read_text() == "four\n"
    assert (tmp_path / "dl" / "out" / "d" / "%2e%2e").read_text() == "five\n"
    assert (tmp_path / "dl" / "out" / "[link=https:evil.example]click").read_text() == "two\n"


def test_a_progress_message_reaches_a_terminal_as_text(start_server, write_job, jobs_dir) -> None:
    write_job("maker", MAKER)
    server = start_server(jobs_dir)
    run_id = web.post(f"{server.url}/v1/runs", json={"job": "maker"}).json()["id"]
    # `watch` on a real terminal (a pty): the progress bar and the log's tail are drawn
    status, drawn = on_terminal(server, "watch", run_id)
    assert status == 0
    assert b"\x1b]0;PWNED" not in drawn  # a title the program set: never sent
    assert b"\x1b[41m" not in drawn  # nor its colour
    assert b"\\x1b]0;PWNED" in drawn or b"\\x1b[41mred" in drawn or b"red [/] x" in drawn


def test_shown_text_escapes_markup_and_what_a_terminal_would_act_on() -> None:
    said = "[/] \x1b]0;T\x07 \u202egnp.exe \x9b tab\there\nline"
    assert plain(said) == "[/] \\x1b]0;T\\x07 \\u202egnp.exe \\x9b tab\there\nline"
    assert shown(said).startswith("\\[/] ")


def test_an_id_a_user_types_stays_one_path_segment(start_server) -> None:
    """A review: `cancel("..")` was sent as POST /v1/cancel, `cancel(".")` as POST
    /v1/runs/cancel (quote keeps dots, and the client resolves dot-segments)."""
    from runyard.client import APIError, Client

    server = start_server()
    with Client(server.url) as c:
        for typed in ("..", ".", "x?y", "x#y"):
            with pytest.raises(APIError) as refused:
                c.cancel(typed)
            # answered by the cancel route about that run, not by some other route
            assert refused.value.status in (404, 422), (typed, refused.value.detail)
            assert "run" in str(refused.value.detail).lower(), (typed, refused.value.detail)


def test_an_empty_id_is_refused_before_it_names_a_collection(start_server) -> None:
    """A probe: `run("")` asked GET /v1/runs/, whose redirect to the runs' list the client
    reported as a server that is no runyard one (check --server); `delete("")` likewise."""
    from runyard.client import Client
    from runyard.client_guards import ClientError

    server = start_server()
    with Client(server.url) as c:
        asks = [c.run, c.cancel, c.delete, c.logs, c.job, c.artifacts, c.delete_upload]
        for ask in asks:
            with pytest.raises(ClientError, match="empty id"):
                ask("")
    said = cli(server, "show", "")
    assert said.returncode != 0
    assert "empty id" in said.stderr
    assert "307" not in said.stderr
