"""Run commands: submit, run, ls, show, logs, watch, cancel, artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Column, Table

from runyard.cli.live import follow, watch
from runyard.cli.options import (
    JsonOpt,
    LabelOpt,
    ParamOpt,
    ServerOpt,
    TokenOpt,
    as_declared,
    parse_kv,
    parse_labels,
)
from runyard.cli.output import (
    connected,
    err,
    exit_status,
    finished,
    out,
    print_json,
    print_log,
    print_run,
    shown,
    styled_state,
)
from runyard.cli.uploads import upload_files
from runyard.client import Client
from runyard.client_downloads import LeftOut, PartialListingError
from runyard.models import RunState
from runyard.schemas import RunPage


def submit(
    job: str,
    param: ParamOpt = [],  # noqa: B006
    label: LabelOpt = [],  # noqa: B006
    priority: Annotated[int | None, typer.Option(help="Higher runs first.")] = None,
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key")] = None,
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="Print the log; exit with the run's status.")
    ] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Submit a run of JOB (`-p NAME=@FILE` uploads a file for a file param)."""
    texts: dict[str, str] = {}
    params = parse_kv(param, "param", files=True, texts=texts)
    labels = parse_labels(label)
    with connected(server, token) as c:
        params = upload_files(c, job, as_declared(c, job, params, texts), err)
        run = c.submit(
            job, params, priority=priority, labels=labels, idempotency_key=idempotency_key
        )
        if not follow_:
            out.print(shown(run.id))
            return
        err.print(f"[dim]run {shown(run.id)} queued[/dim]")
        final = follow(c, run.id, err)
    raise finished(final)


def run_sync(
    job: str,
    param: ParamOpt = [],  # noqa: B006
    label: LabelOpt = [],  # noqa: B006
    wait: Annotated[float, typer.Option(help="Seconds the server holds the answer.")] = 300,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Run JOB synchronously: print its log when it ends and exit with its status."""
    texts: dict[str, str] = {}
    params = parse_kv(param, "param", files=True, texts=texts)
    labels = parse_labels(label)
    with connected(server, token) as c:
        params = upload_files(c, job, as_declared(c, job, params, texts), err)
        run = c.submit(job, params, labels=labels, wait=wait)
        if run.state.terminal:
            print_log(c, run.id)
        else:
            run = follow(c, run.id, err)  # longer than the wait: follow it to its end
    raise finished(run)


def list_runs(
    job: Annotated[str | None, typer.Option(help="Only runs of this job.")] = None,
    state: Annotated[RunState | None, typer.Option(help="Only runs in this state.")] = None,
    label: Annotated[list[str], typer.Option("-l", "--label", help="KEY=VALUE.")] = [],  # noqa: B006
    batch_id: Annotated[str | None, typer.Option("--batch", help="Only runs of a batch.")] = None,
    limit: Annotated[int, typer.Option(help="How many.", min=1)] = 20,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List runs, newest first."""
    labels = parse_labels(label)
    with connected(server, token) as c:
        page = c.runs(job=job, state=state, labels=labels, batch=batch_id, limit=limit)
    if as_json:  # a server's answer: no more rows than were asked for, as in the table
        print_json(page.model_copy(update={"runs": page.runs[:limit]}))
        return
    out.print(_runs_table(page, limit))


def _runs_table(page: RunPage, limit: int) -> Table:
    table = Table("job", "state", "attempt", "exit", "created", "reason")
    table.columns.insert(0, Column("id", no_wrap=True))
    for r in page.runs[:limit]:  # a server's answer: no more rows than were asked for
        exit_code = "" if r.exit_code is None else str(r.exit_code)
        created = r.created_at.strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(shown(r.id), shown(r.job), styled_state(r.state), str(r.attempt), exit_code,
                      created, shown(r.reason or ""))  # fmt: skip
    return table


def show(
    run_id: str, server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Show one run with its attempts."""
    with connected(server, token) as c:
        run = c.run(run_id)
    if as_json:
        print_json(run)
    else:
        print_run(run)


def logs(
    run_id: str,
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing as it grows.")
    ] = False,
    attempt: Annotated[int | None, typer.Option(help="Attempt number (default: latest).")] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Print a run's log: piped, its exact bytes; on a terminal, control characters as escapes."""
    with connected(server, token) as c:
        if follow_:
            follow(c, run_id, err)
            return
        print_log(c, run_id, attempt)


def watch_run(run_id: str, server: ServerOpt = None, token: TokenOpt = None) -> None:
    """Watch a run live: state, progress and the tail of its log."""
    with connected(server, token) as c:
        final = watch(c, run_id, out)
    raise typer.Exit(exit_status(final))


def cancel(run_id: str, server: ServerOpt = None, token: TokenOpt = None) -> None:
    """Cancel a queued or running run."""
    with connected(server, token) as c:
        run = c.cancel(run_id)
    out.print(
        f"{shown(run.id)} {run.state.value}"
        + (" (cancelling)" if run.state is RunState.RUNNING else "")
    )


def artifacts(
    run_id: str,
    download: Annotated[Path | None, typer.Option(help="Download all artifacts into DIR.")] = None,
    overwrite: Annotated[
        bool,
        typer.Option(help="Replace files already in DIR (else refused)."),
    ] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """List a run's artifacts, or download them; what the listing left out is said on stderr."""
    # a file it cannot serve, a directory too large to read whole: named, never left out in
    # silence; a download it left artifacts out of exits 1, once every file listed is saved
    with connected(server, token) as c:
        if download is None:
            _list_artifacts(c, run_id)
        else:
            _download(c, run_id, download, overwrite)


def _list_artifacts(c: Client, run_id: str) -> None:
    left_out = LeftOut()
    table = Table("path", "size")
    for page in c.artifact_pages(run_id):  # every page, not the first one's thousand
        left_out.add(page)
        for a in page.artifacts:
            table.add_row(shown(a.path), str(a.size))
    out.print(table)
    if left_out:
        _say_left_out(left_out)
        err.print("[yellow]warning:[/yellow] the listing is partial: not every artifact the "
                  "run declared is listed (named above)")  # fmt: skip


def _say_left_out(left_out: LeftOut) -> None:
    """What the run declared and the listing left out, on stderr: never in silence (a
    directory read in part printed its rows and no word), and never in the table or the
    paths saved that stdout gives a script."""
    for path, reason in left_out.named:
        err.print(f"not listed: {shown(repr(path))}: {shown(reason)}")
    if left_out.omitted:
        err.print(f"not listed: {left_out.omitted} more")
    if n := left_out.unexplained:
        err.print(f"not listed: what {n} {'page' if n == 1 else 'pages'} left out (the server "
                  "said partial and named nothing)")  # fmt: skip


def _download(c: Client, run_id: str, folder: Path, overwrite: bool) -> None:
    """Every artifact into `folder`, each inside it whatever path the server names (a
    ClientError). What the folder cannot take (a file and a folder of one name, a name too
    long) is said in one line, naming the file, and exits with status 2 (they were
    tracebacks); what the listing left out is named, and exits with status 1."""
    try:
        for dest in c.download_all(run_id, folder, overwrite=overwrite):
            out.print(shown(dest))
    except PartialListingError as exc:
        _say_left_out(exc.left_out)
        err.print(f"[red]error:[/red] {shown(str(exc))}")
        raise typer.Exit(1) from None
    except OSError as exc:
        # a rename's second name is the file's own (the first, its download's temporary one)
        where = next((n for n in (exc.filename2, exc.filename) if n is not None), folder)
        err.print(f"[red]error:[/red] cannot save {shown(repr(str(where)))}: "
                  f"{shown(exc.strerror or type(exc).__name__)}")  # fmt: skip
        raise typer.Exit(2) from None
