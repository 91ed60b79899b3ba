"""The files a command names (`-p NAME=@FILE`), uploaded before it submits: a progress bar on
the terminal for the large ones, nothing where output is not a terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from runyard.cli.output import shown
from runyard.client import Client

SHOWN_FROM = 8 * 1024 * 1024  # smaller files go up before a bar would be seen


def upload_files(
    client: Client, job: str, params: dict[str, Any], console: Console
) -> dict[str, Any]:
    """Params with each `Path` value uploaded and replaced by its `ref` (`upload:ID/NAME`):
    only for a file param of `job`, checked before anything is sent."""
    client.check_files(job, params)
    done = dict(params)
    for name, value in params.items():
        if isinstance(value, Path):
            done[name] = _upload(client, value, console).ref
    return done


def _upload(client: Client, path: Path, console: Console) -> Any:
    size = path.stat().st_size
    if size < SHOWN_FROM or not console.is_terminal:
        return client.upload(path)
    columns = ("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        # the description is markup, drawn on the terminal: the name is shown, not obeyed
        task = bar.add_task(f"uploading {shown(path.name)}", total=size)
        return client.upload(path, progress=lambda sent: bar.advance(task, sent))
