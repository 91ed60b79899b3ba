"""Following runs live in the terminal: the log over SSE, a progress bar, `runyard watch`."""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from runyard.cli.output import plain, shown
from runyard.client import Client, LogPiece, LogStart, StreamEnd
from runyard.models import RunState
from runyard.schemas import RunView


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
    """Background thread: progress events move the bar."""
    for item in client.stream_events(run_id):
        if isinstance(item, StreamEnd):
            return
        data = item["data"]
        if item["kind"] == "progress" and isinstance(data.get("fraction"), int | float):
            bar.update(task, completed=max(0.0, min(1.0, data["fraction"])) * 100,
                       message=shown(str(data.get("message", ""))[:80]))  # fmt: skip
        elif item["kind"] == "state":
            bar.update(task, description=shown(f"{data['to']} (attempt {data['attempt']})"))


def stream_attempts(client: Client, run_id: str, write: Any) -> None:
    """Write every attempt's log as it grows, until the run's last attempt ends. A lagged or
    dropped stream resumes from the last offset; a retry moves on to the next attempt."""
    attempt: int | None = None
    offset = 0
    while True:
        end: StreamEnd | None = None
        for item in client.stream_log(run_id, attempt=attempt, offset=offset):
            if isinstance(item, LogStart):
                attempt = item.attempt
            elif isinstance(item, LogPiece):
                write(item.data)
                offset = item.end_offset
            else:
                end = item
        if end is None or end.kind in ("lagged", "shutdown"):
            time.sleep(0.2 if end is None or end.kind == "lagged" else 1.0)
            continue  # resume the same attempt from `offset`
        ended = int(end.data["attempt"])
        # a terminal state may have been reached by a later attempt while this one was being
        # resumed (a reconnect after a server restart): follow those attempts too
        if RunState(end.data["state"]).terminal and client.run(run_id).attempt <= ended:
            return
        attempt, offset = ended + 1, 0  # retried: follow the next attempt


def follow(client: Client, run_id: str, err: Console) -> RunView:
    """Print the run's log as it grows; on a terminal, with a live progress bar."""
    if not (sys.stdout.isatty() and err.is_terminal):

        def raw(data: bytes) -> None:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()

        stream_attempts(client, run_id, raw)
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
            plain(data.decode("utf-8", "replace")), end="", highlight=False))  # fmt: skip
    return client.run(run_id)


def _token(client: Client) -> str | None:
    auth = client.http.headers.get("Authorization", "")
    return auth.removeprefix("Bearer ") or None


def watch(client: Client, run_id: str, console: Console, lines: int = 20) -> RunView:
    """A live view of one run: state, progress and the tail of its log."""
    tail: deque[str] = deque(maxlen=lines)
    partial = [""]

    def on_log(data: bytes) -> None:
        text = partial[0] + plain(data.decode("utf-8", "replace"))
        *done, partial[0] = text.split("\n")
        tail.extend(done)

    bar = _progress_bar(console)
    task = bar.add_task("", total=100, message="")
    with (
        Client(str(client.http.base_url), _token(client)) as side_a,
        Client(str(client.http.base_url), _token(client)) as side_b,
    ):
        threads = [
            threading.Thread(target=_feed_progress, args=(side_a, run_id, bar, task), daemon=True),
            threading.Thread(target=stream_attempts, args=(side_b, run_id, on_log), daemon=True),
        ]
        for t in threads:
            t.start()
        with Live(console=console, refresh_per_second=4) as live:
            while True:
                run = client.run(run_id)
                header = Text(
                    plain(f"{run.id}  {run.job}  {run.state.value}  attempt {run.attempt}")
                )
                live.update(Group(header, bar, Text("\n".join([*tail, partial[0]]))))
                if run.state.terminal and not threads[1].is_alive():
                    return run
                threads[1].join(timeout=0.5)
