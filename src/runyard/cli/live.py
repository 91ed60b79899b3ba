"""Following runs live in the terminal: the log over SSE, a progress bar, `runyard watch`."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from runyard.cli.output import SHOWN_MAX, LogOut, clipped, first_line, shown
from runyard.client import Client, LogPiece, LogStart, StreamEnd
from runyard.client_guards import ClientError
from runyard.models import RunState
from runyard.schemas import RunView

# The longest wait before a log stream that brought nothing is asked again, or before the run
# is read again for its next attempt: a retry's log is shown at most this late.
WAIT_MAX_S = 2.0


def _progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[message]}"),
        console=console,
        transient=True,
    )


def _feed_progress(client: Client, run_id: str, bar: Progress, task: Any) -> None:
    """Background thread: progress events move the bar; an event of another shape is passed
    over. A stream that fails stops the bar, said on it: this thread's exception would be
    threading's traceback, drawn over the bar."""
    try:
        for item in client.stream_events(run_id):
            if isinstance(item, StreamEnd):
                return
            _show_event(bar, task, item)
    except Exception as exc:  # the bar is an aid: the log goes on without it
        said = f"progress stopped: {type(exc).__name__}: {first_line(exc)}"
        bar.update(task, message=shown(said, 80))


def _show_event(bar: Progress, task: Any, item: Any) -> None:
    data = item.get("data") if isinstance(item, dict) else None
    if not isinstance(data, dict):
        return
    if item.get("kind") == "progress" and isinstance(data.get("fraction"), int | float):
        bar.update(task, completed=max(0.0, min(1.0, data["fraction"])) * 100,
                   message=shown(data.get("message", ""), 80))  # fmt: skip
    elif item.get("kind") == "state":
        said = f"{data.get('to')} (attempt {data.get('attempt')})"
        bar.update(task, description=shown(said, 80))


def stream_attempts(client: Client, run_id: str, write: Any) -> None:
    """Write every attempt's log as it grows, until the run's last attempt ends. A lagged or
    dropped stream resumes from the last offset; a retry moves on to the next attempt once
    the run has it. A stream that brings nothing new is asked again later each time (a server
    that always answered `lagged`, or ended an attempt the run had not ended, was asked
    again without pause, for ever)."""
    attempt: int | None = None
    offset = 0
    idle = 0  # streams in a row that brought no byte of log
    while True:
        end: StreamEnd | None = None
        moved = False
        for item in client.stream_log(run_id, attempt=attempt, offset=offset):
            if isinstance(item, LogStart):
                attempt = item.attempt
            elif isinstance(item, LogPiece):
                write(item.data)
                moved = moved or item.end_offset > offset
                offset = item.end_offset
            else:
                end = item
        if end is not None and end.kind == "end":
            ended = attempt if attempt is not None else _attempt_of(end)
            following = _next_attempt(client, run_id, ended)
            if following is None:
                return
            attempt, offset, idle = following, 0, 0
            continue
        # lagged, shutdown, or dropped: resume the same attempt from `offset`, or from where a
        # `lagged` says (0: its log was rewritten; resumed from the old offset, past the new
        # end, nothing of it was shown, a probe)
        offset = _resumed_from(end, offset)
        idle = 0 if moved else min(idle + 1, 8)
        first = 1.0 if end is not None and end.kind == "shutdown" else 0.2
        time.sleep(min(first * 2**idle, WAIT_MAX_S))


def _resumed_from(end: StreamEnd | None, offset: int) -> int:
    said = end.data.get("last_id") if end is not None and end.kind == "lagged" else None
    if isinstance(said, int) and not isinstance(said, bool) and 0 <= said < offset:
        return said
    return offset


def _attempt_of(end: StreamEnd) -> int:
    """The attempt an `end` is of, when the stream did not say which it followed."""
    number = end.data.get("attempt") if isinstance(end.data, dict) else None
    if isinstance(number, int) and not isinstance(number, bool) and number >= 1:
        return number
    raise ClientError("the log stream ended without naming its attempt")


def _next_attempt(client: Client, run_id: str, ended: int) -> int | None:
    """The attempt after `ended`, once the run has it; None if the run is over without one.
    The run is read again later each time (a retry not started yet): an attempt the run does
    not have is never asked for."""
    wait = 0.2
    while True:
        run = client.run(run_id)
        if run.attempt > ended or (run.attempt == ended and run.state is RunState.QUEUED):
            # had, or next for a run queued again: the stream waits for it to start
            return ended + 1
        if run.state.terminal:
            return None
        time.sleep(wait)
        wait = min(wait * 2, WAIT_MAX_S)


def follow(client: Client, run_id: str, err: Console) -> RunView:
    """Print the run's log as it grows; on a terminal, with a live progress bar."""
    log = LogOut()
    if not (log.terminal and err.is_terminal):
        # no bar (stderr elsewhere, `2>file`): a terminal on stdout is given text all the same
        stream_attempts(client, run_id, lambda data: log.write(data, flush=True))
        log.end()
        return client.run(run_id)
    bar = _progress_bar(err)
    task = bar.add_task("queued", total=100, message="")
    with bar, Client(str(client.http.base_url), _token(client)) as side:
        feeder = threading.Thread(
            target=_feed_progress, args=(side, run_id, bar, task), daemon=True
        )
        feeder.start()
        # under the bar, the log's text only: an escape sequence of the program's would move
        # the cursor or restyle what the bar draws (without a terminal it is passed whole)
        stream_attempts(client, run_id, lambda data: bar.console.out(
            log.shown(data), end="", highlight=False))  # fmt: skip
        bar.console.out(log.shown(b"", final=True), end="", highlight=False)
    return client.run(run_id)


def _token(client: Client) -> str | None:
    auth = client.http.headers.get("Authorization", "")
    return auth.removeprefix("Bearer ") or None


class _Worker(threading.Thread):
    """A daemon thread whose exception is kept for the thread that waits on it, to be raised
    there as the command's error (threading would write its traceback over the live view)."""

    def __init__(self, work: Callable[..., None], *args: Any) -> None:
        super().__init__(daemon=True)
        self.work, self.args = work, args
        self.failure: Exception | None = None

    def run(self) -> None:
        try:
            self.work(*self.args)
        except Exception as exc:  # the waiting thread's to report
            self.failure = exc


class _Tail:
    """The last lines of a log, each kept to what is shown of it (a program's line of a
    gigabyte without a newline was held whole, and copied again with each piece of it)."""

    def __init__(self, lines: int) -> None:
        self.ended: deque[str] = deque(maxlen=lines)
        self.line, self.left_out = "", 0  # the line being written: its start, and the rest

    def add(self, text: str) -> None:
        for i, piece in enumerate(text.split("\n")):
            if i:
                self.ended.append(self.shown_line())
                self.line, self.left_out = "", 0
            room = max(0, SHOWN_MAX + 1 - len(self.line))
            self.line += piece[:room]
            self.left_out += len(piece) - len(piece[:room])

    def shown_line(self) -> str:
        return clipped(self.line, left_out=self.left_out)

    def text(self) -> str:
        return "\n".join([*self.ended, self.shown_line()])


def watch(client: Client, run_id: str, console: Console, lines: int = 20) -> RunView:
    """A live view of one run: state, progress and the tail of its log."""
    tail = _Tail(lines)
    bar = _progress_bar(console)
    task = bar.add_task("", total=100, message="")
    with (
        Client(str(client.http.base_url), _token(client)) as side_a,
        Client(str(client.http.base_url), _token(client)) as side_b,
    ):
        feeder = threading.Thread(
            target=_feed_progress, args=(side_a, run_id, bar, task), daemon=True
        )
        logger = _Worker(stream_attempts, side_b, run_id,
                         lambda data: tail.add(data.decode("utf-8", "replace")))  # fmt: skip
        feeder.start()
        logger.start()
        with Live(console=console, refresh_per_second=4) as live:
            while True:
                run = client.run(run_id)
                header = Text(f"{clipped(run.id)}  {clipped(run.job)}  {run.state.value}  "
                              f"attempt {run.attempt}")  # fmt: skip
                live.update(Group(header, bar, Text(tail.text())))
                if logger.failure is not None:
                    raise logger.failure
                if run.state.terminal and not logger.is_alive():
                    return run
                logger.join(timeout=0.5)
