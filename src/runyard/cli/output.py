"""What the CLI prints: its consoles, state colours, errors, a run's details and the exit
status a finished run maps to."""

from __future__ import annotations

import codecs
import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import accumulate, takewhile

import typer
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError
from rich.console import Console
from rich.highlighter import JSONHighlighter, ReprHighlighter
from rich.markup import escape
from rich.text import Text

from runyard.client import APIError, Client
from runyard.client_guards import ClientError
from runyard.models import RunState
from runyard.schemas import RunView

# One text of a server's or a program's, as printed: a dozen lines at 80 columns. rich's
# highlighter is quadratic in a word's length (a 40 KB detail without a space took 10 s of
# CPU to print, 250 KB minutes); every such text is cut here, however it reached the CLI.
SHOWN_MAX = 1000
# Longer lines are printed without rich's colours: the bound above is per text, and a line
# may hold several, or a command print one line per item of an answer.
HIGHLIGHTED_MAX = 200
# pydantic lists every error to give any one (a list of a million `{}` made 18 M errors, and
# their message 20 GB): past this many, only their number is said.
LISTED_ERRORS_MAX = 10_000


class _ShortLines(ReprHighlighter):
    """rich's highlighter, for the lines short enough for it."""

    def highlight(self, text: Text) -> None:
        if len(text) <= HIGHLIGHTED_MAX:
            super().highlight(text)


out = Console(highlighter=_ShortLines())
err = Console(stderr=True, highlighter=_ShortLines())

# What a terminal acts on rather than shows: C0 and C1 control characters (ESC starts colour,
# title and hyperlink sequences) and the bidi controls that reorder what follows them on the
# line (a name shown as "exe.png" that is "gnp.exe" backwards). Tab and newline are kept. And
# lone surrogates (a server's "\ud800" in JSON), which no encoding writes: printing one was a
# UnicodeEncodeError's traceback. And what takes no room and so hides text (zero-width
# characters, the soft hyphen, Hangul fillers, word joiners, a BOM, tags), as the dashboard
# writes them out (api/ui/js/util.js): ZWJ, ZWNJ and variation selectors stay, scripts and
# emoji need them.
_ACTS = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b"
    "\u200e\u200f\u2028-\u202e\u2060-\u206f\u3164\ufeff\uffa0\ufff9-\ufffb"
    "\U0001d173-\U0001d17a\U000e0000-\U000e007f\ud800-\udfff]"
)


def plain(value: object) -> str:
    """Text from a server or a program made safe to write to a terminal: what it would act on
    is written as a visible escape (\\x1b, \\u202e)."""
    return _ACTS.sub(lambda m: ascii(m[0])[1:-1], str(value))


def clipped(value: object, limit: int = SHOWN_MAX, left_out: int = 0) -> str:
    """`plain`, at most `limit` characters of it, then `...` and how many were left out (with
    `left_out`, those of a text kept in part). An escape is kept whole or left out whole; the
    count is of the text's own characters."""
    text = str(value)
    if len(text) <= limit and len(safe := plain(text)) <= limit and not left_out:
        return safe
    # each character shows as one or more: no more than `limit` of them fit
    sizes = accumulate(len(plain(char)) for char in text[: limit + 1])
    kept = sum(1 for _ in takewhile(lambda size: size <= limit, sizes))
    return f"{plain(text[:kept])}... ({len(text) - kept + left_out:,} more characters)"


def shown(value: object, limit: int = SHOWN_MAX) -> str:
    """`clipped`, for a console that reads rich markup (print, a table cell, a progress field):
    a `[`...`]` in the text is shown, never taken for a style, a link or a closing tag."""
    text = escape(clipped(value, limit))
    # a `[` that nothing after it in the text closes was closed by what was printed next
    # (`[link=https://...` then `: x]` made a link of both): an empty span after it keeps it
    # a `[` of its own
    opening = text.rfind("[")
    if opening >= 0 and "]" not in text[opening:]:
        text = f"{text[: opening + 1]}[b][/b]{text[opening + 1 :]}"
    return text


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
        except (ClientError, httpx.HTTPError, ValueError, RecursionError, LookupError, TypeError,
                AttributeError, ArithmeticError) as exc:  # fmt: skip
            # ValueError: an answer whose JSON is not what a runyard server sends (pydantic's
            # ValidationError is one), or a number that is none; LookupError to
            # ArithmeticError: a field missing, or of another type or size, in what the server
            # sent (a stream's event), read by code that took it for what runyard sends
            err.print(f"[red]error:[/red] {type(exc).__name__}: {shown(first_line(exc), 300)}")
            raise typer.Exit(2) from None


def first_line(exc: Exception) -> str:
    """What went wrong, in the first line of the exception's message."""
    if isinstance(exc, ValidationError):
        count = exc.error_count()  # str(exc) would write all of them
        said = f"{count:,} validation error{'s' if count != 1 else ''} for {exc.title}"
        listed = [] if count > LISTED_ERRORS_MAX else exc.errors(include_url=False)
        for first in listed[:1]:
            return f"{said}; the first: {'.'.join(map(str, first['loc']))}: {first['msg']}"
        return said
    return str(exc).partition("\n")[0] or type(exc).__name__


def exit_status(run: RunView) -> int:
    """The shell status a finished run maps to: its exit code, 124 for a timeout (as timeout(1)),
    130 for a cancel, 1 for any other failure without a code a shell can carry (1 to 255)."""
    if run.state is RunState.SUCCEEDED:
        return 0
    if run.state is RunState.TIMED_OUT:
        return 124
    if run.state is RunState.CANCELLED:
        return 130
    # a shell keeps the low 8 bits of a status: 256 (a server's, or a wrapper's) read as 0,
    # success, for a run that failed
    code = run.exit_code
    return code if code is not None and 1 <= code <= 255 else 1


def finished(run: RunView) -> typer.Exit:
    """Say how the run ended (on stderr) and exit with the status it maps to."""
    err.print(f"{styled_state(run.state)}: {shown(run.reason or '')}")
    return typer.Exit(exit_status(run))


class LogOut:
    """stdout for a program's log: to a pipe or a file its bytes as they are (what tools and
    files are given), to a terminal as `plain` text, as `logs -f` and `watch` show it: the
    program's escape sequences would set the terminal's title, clear it or switch it to the
    alternate screen, and a bidi control reorder the line."""

    def __init__(self) -> None:
        self.terminal = sys.stdout.isatty()
        # a character cut between two pieces (a chunk ends every MiB) is one character, not
        # two U+FFFD
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def shown(self, data: bytes, final: bool = False) -> str:
        """The text a terminal is given for `data`, the next piece of the log."""
        return plain(self._decoder.decode(data, final))

    def write(self, data: bytes, flush: bool = False) -> None:
        sys.stdout.buffer.write(self._encoded(self.shown(data)) if self.terminal else data)
        if flush:
            sys.stdout.buffer.flush()

    def end(self) -> None:
        """The log is over: a character it ended in the middle of is shown as U+FFFD."""
        if self.terminal:
            sys.stdout.buffer.write(self._encoded(self.shown(b"", final=True)))
        sys.stdout.buffer.flush()

    @staticmethod
    def _encoded(text: str) -> bytes:
        # what the terminal's encoding cannot write is shown as its escape, as the rest is
        return text.encode(sys.stdout.encoding or "utf-8", "backslashreplace")


def print_log(c: Client, run_id: str, attempt: int | None = None) -> None:
    log = LogOut()
    offset = 0
    while True:
        data, offset = c.logs(run_id, offset, attempt=attempt)  # ClientError if it stays put
        if not data:
            break
        log.write(data)
    log.end()


def print_json(model: BaseModel) -> None:
    """`model` as indented JSON, with what a terminal would act on and JSON leaves as it is
    (it escapes C0 controls only: C1 controls, DEL, bidi controls, lone surrogates) written as
    JSON escapes: the same JSON to any reader, piped or not."""
    try:
        try:
            data = json.loads(model.model_dump_json())  # pydantic's JSON: an infinity as null
        except PydanticSerializationError:  # a lone surrogate, which pydantic will not encode
            data = model.model_dump(mode="json")
    except ValueError as exc:  # nested past pydantic's depth (~255): the server's doing
        err.print(f"[red]error:[/red] the answer cannot be written as JSON here: {exc}")
        raise typer.Exit(2) from None
    # as JSON escapes them (past U+FFFF: a surrogate pair), which it reads back the same
    text = _ACTS.sub(
        lambda m: json.dumps(m[0])[1:-1], json.dumps(data, indent=2, ensure_ascii=False)
    )
    shown_json = JSONHighlighter()(text)
    shown_json.no_wrap, shown_json.overflow = True, None
    out.print(shown_json, soft_wrap=True)


def print_run(run: RunView) -> None:
    out.print(f"[bold]{shown(run.id)}[/bold]  {shown(run.job)}  {styled_state(run.state)}")
    for key in ("params", "labels", "attempt", "exit_code", "reason", "progress", "created_at",
                "started_at", "finished_at"):  # fmt: skip
        value = getattr(run, key)
        if value not in (None, {}, 0) or (key == "exit_code" and value == 0):
            out.print(f"  {key}: {shown(value)}")
    for a in run.attempts or []:
        out.print(
            f"  attempt {a.number}: {shown(a.state)} pid={a.pid} exit={a.exit_code} "
            f"{shown(a.outcome)}"
        )
