"""What the CLI prints: its consoles, state colours, errors, a run's details and the exit
status a finished run maps to."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

from runyard.client import APIError, Client
from runyard.client_guards import ClientError
from runyard.models import RunState
from runyard.schemas import RunView

out = Console()
err = Console(stderr=True)

# What a terminal acts on rather than shows: C0 and C1 control characters (ESC starts colour,
# title and hyperlink sequences) and the bidi controls that reorder what follows them on the
# line (a name shown as "exe.png" that is "gnp.exe" backwards). Tab and newline are kept.
_ACTS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def plain(value: object) -> str:
    """Text from a server or a program made safe to write to a terminal: what it would act on
    is written as a visible escape (\\x1b, \\u202e)."""
    return _ACTS.sub(lambda m: ascii(m[0])[1:-1], str(value))


def shown(value: object) -> str:
    """`plain`, for a console that reads rich markup (print, a table cell, a progress field):
    a `[`...`]` in the text is shown, never taken for a style, a link or a closing tag."""
    return escape(plain(value))


STATE_STYLE = {
    "queued": "yellow",
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
    "timed_out": "red",
}


def styled_state(state: RunState) -> str:
    style = STATE_STYLE.get(state.value, "white")
    return f"[{style}]{state.value}[/{style}]"


def fail(exc: APIError) -> typer.Exit:
    err.print(f"[red]error {exc.status}:[/red] {shown(exc.detail)}")
    return typer.Exit(2)


@contextmanager
def connected(server: str | None, token: str | None) -> Iterator[Client]:
    """A client for one command; an error answer, a server that cannot be reached or an
    answer that cannot be read is printed in one line and exits with status 2 (they were
    tracebacks)."""
    import httpx

    with Client(server, token) as c:
        try:
            yield c
        except APIError as exc:
            raise fail(exc) from None
        except (ClientError, httpx.HTTPError, ValueError, RecursionError) as exc:
            # ValueError: an answer whose JSON is not what a runyard server sends (pydantic's
            # ValidationError is one), or a number that is none
            why = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            err.print(f"[red]error:[/red] {type(exc).__name__}: {shown(why)}")
            raise typer.Exit(2) from None


def exit_status(run: RunView) -> int:
    """The shell status a finished run maps to: its exit code, 124 for a timeout (as timeout(1)),
    130 for a cancel, 1 for any other failure without a code."""
    if run.state is RunState.SUCCEEDED:
        return 0
    if run.state is RunState.TIMED_OUT:
        return 124
    if run.state is RunState.CANCELLED:
        return 130
    return run.exit_code if run.exit_code not in (None, 0) else 1


def finished(run: RunView) -> typer.Exit:
    """Say how the run ended (on stderr) and exit with the status it maps to."""
    err.print(f"{styled_state(run.state)}: {shown(run.reason or '')}")
    return typer.Exit(exit_status(run))


def print_log(c: Client, run_id: str, attempt: int | None = None) -> None:
    offset = 0
    while True:
        data, offset = c.logs(run_id, offset, attempt=attempt)  # ClientError if it stays put
        if not data:
            break
        sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def print_run(run: RunView) -> None:
    out.print(f"[bold]{shown(run.id)}[/bold]  {shown(run.job)}  {styled_state(run.state)}")
    for key in ("params", "labels", "attempt", "exit_code", "reason", "progress", "created_at",
                "started_at", "finished_at"):  # fmt: skip
        value = getattr(run, key)
        if value not in (None, {}, 0) or (key == "exit_code" and value == 0):
            out.print(f"  {key}: {shown(value)}")
    for a in run.attempts or []:
        out.print(
            f"  attempt {a.number}: {a.state} pid={a.pid} exit={a.exit_code} {shown(a.outcome)}"
        )
