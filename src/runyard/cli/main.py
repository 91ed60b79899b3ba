"""The `runyard` command: serve, and a client for every run operation."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Column, Table

from runyard.auth import Role, create_token, load_tokens
from runyard.cli.follow import follow, watch
from runyard.cli.schedule import app as schedule_app
from runyard.client import APIError, Client
from runyard.config import Settings
from runyard.models import RunState
from runyard.schemas import RunView

app = typer.Typer(
    help="runyard: command-line programs as a robust HTTP service.", no_args_is_help=True
)
out = Console()
err = Console(stderr=True)

ServerOpt = Annotated[
    str | None, typer.Option("--server", envvar="RUNYARD_SERVER", help="Server URL.")
]
TokenOpt = Annotated[
    str | None, typer.Option("--token", envvar="RUNYARD_TOKEN", help="Bearer token.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ParamOpt = Annotated[
    list[str], typer.Option("-p", "--param", help="KEY=VALUE (JSON values parsed).")
]
LabelOpt = Annotated[list[str], typer.Option("-l", "--label", help="KEY=VALUE label.")]

STATE_STYLE = {
    "queued": "yellow",
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
    "timed_out": "red",
}


def _client(server: str | None, token: str | None) -> Client:
    return Client(server, token)


def _fail(exc: APIError) -> typer.Exit:
    err.print(f"[red]error {exc.status}:[/red] {exc.detail}")
    return typer.Exit(2)


def parse_kv(items: list[str], what: str) -> dict[str, Any]:
    """`k=v` pairs; values are read as JSON when they parse (42, true, [1,2]), else strings."""
    out_: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{what} {item!r} is not KEY=VALUE")
        try:
            out_[key] = json.loads(raw)
        except ValueError:
            out_[key] = raw
    return out_


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


def _finished(run: RunView) -> typer.Exit:
    """Say how the run ended (on stderr) and exit with the status it maps to."""
    style = STATE_STYLE.get(run.state.value, "white")
    err.print(f"[{style}]{run.state.value}[/{style}]: {run.reason or ''}")
    return typer.Exit(exit_status(run))


def _print_log(c: Client, run_id: str, attempt: int | None = None) -> None:
    offset = 0
    while True:
        data, offset = c.logs(run_id, offset, attempt=attempt)
        if not data:
            break
        sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@app.command()
def serve(
    jobs: Annotated[Path | None, typer.Option(help="Jobs directory (NAME.toml files).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Runs, logs and the database.")] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind.")] = None,
    capacity: Annotated[int | None, typer.Option(help="Runs at once (default: CPUs).")] = None,
    insecure: Annotated[
        bool, typer.Option(help="Allow a non-loopback bind without tokens.")
    ] = False,
    drain: Annotated[
        bool, typer.Option(help="On SIGTERM wait for running programs (then cancel them).")
    ] = False,
    drain_timeout: Annotated[
        float | None, typer.Option(help="Seconds to wait when draining.")
    ] = None,
    tokens: Annotated[Path | None, typer.Option(help="Tokens file (hashes and roles).")] = None,
) -> None:
    """Run the server."""
    from runyard.cli.serve import is_loopback
    from runyard.cli.serve import serve as run_server

    settings = Settings.from_env(
        jobs_dir=jobs,
        data_dir=data_dir,
        host=host,
        port=port,
        capacity=capacity,
        drain=drain or None,
        drain_timeout_s=drain_timeout,
        tokens_file=tokens,
    )
    has_tokens = bool(load_tokens(settings.tokens_file))
    if not is_loopback(settings.host) and not has_tokens and not insecure:
        err.print(
            f"[red]refusing to bind {settings.host}:[/red] no tokens are configured, so anyone "
            "who reaches it could run programs. Configure tokens (runyard token create), "
            "bind to 127.0.0.1, or pass --insecure."
        )
        raise typer.Exit(2)
    run_server(settings)


@app.command("jobs")
def list_jobs(server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """List declared jobs and job files that failed to load."""
    with _client(server, token) as c:
        try:
            jobs = c.jobs()
        except APIError as exc:
            raise _fail(exc) from None
    if as_json:
        out.print_json(jobs.model_dump_json())
        return
    table = Table("job", "params", "description")
    for job in jobs.jobs:
        props = job.params_schema.get("properties", {})
        table.add_row(job.name, ", ".join(props), job.description)
    out.print(table)
    for fname, message in jobs.errors.items():
        err.print(f"[red]{fname}[/red]: {message}")


def _print_run(run: RunView) -> None:
    style = STATE_STYLE.get(run.state.value, "white")
    out.print(f"[bold]{run.id}[/bold]  {run.job}  [{style}]{run.state.value}[/{style}]")
    for key in ("params", "labels", "attempt", "exit_code", "reason", "progress", "created_at",
                "started_at", "finished_at"):  # fmt: skip
        value = getattr(run, key)
        if value not in (None, {}, 0) or (key == "exit_code" and value == 0):
            out.print(f"  {key}: {value}")
    for a in run.attempts or []:
        out.print(f"  attempt {a.number}: {a.state} pid={a.pid} exit={a.exit_code} {a.outcome}")


@app.command()
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
    """Submit a run of JOB."""
    params = parse_kv(param, "param")
    labels = {k: str(v) for k, v in parse_kv(label, "label").items()}
    with _client(server, token) as c:
        try:
            run = c.submit(
                job, params, priority=priority, labels=labels, idempotency_key=idempotency_key
            )
            if not follow_:
                out.print(run.id)
                return
            err.print(f"[dim]run {run.id} queued[/dim]")
            final = follow(c, run.id, err)
        except APIError as exc:
            raise _fail(exc) from None
    raise _finished(final)


@app.command("run")
def run_sync(
    job: str,
    param: ParamOpt = [],  # noqa: B006
    label: LabelOpt = [],  # noqa: B006
    wait: Annotated[float, typer.Option(help="Seconds the server holds the answer.")] = 300,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Run JOB synchronously: print its log when it ends and exit with its status."""
    params = parse_kv(param, "param")
    labels = {k: str(v) for k, v in parse_kv(label, "label").items()}
    with _client(server, token) as c:
        try:
            run = c.submit(job, params, labels=labels, wait=wait)
            if run.state.terminal:
                _print_log(c, run.id)
            else:
                run = follow(c, run.id, err)  # longer than the wait: follow it to its end
        except APIError as exc:
            raise _fail(exc) from None
    raise _finished(run)


@app.command("batch")
def batch(
    job: str,
    param: ParamOpt = [],  # noqa: B006
    iterations: Annotated[int | None, typer.Option(help="N runs with the same params.")] = None,
    sweep: Annotated[
        list[str], typer.Option(help="KEY=[v1,v2,...]: one run per combination.")
    ] = [],  # noqa: B006
    priority: Annotated[int | None, typer.Option(help="Higher runs first.")] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Create a batch: --iterations N, or one or more --sweep KEY=[values] (cartesian)."""
    grid = parse_kv(sweep, "sweep") or None
    if grid is not None and not all(isinstance(v, list) for v in grid.values()):
        raise typer.BadParameter("--sweep values are JSON lists, e.g. --sweep seed=[1,2,3]")
    with _client(server, token) as c:
        try:
            made = c.batch(job, parse_kv(param, "param"), iterations=iterations, sweep=grid,
                           priority=priority)  # fmt: skip
        except APIError as exc:
            raise _fail(exc) from None
    out.print(f"{made.id}  {made.size} runs of {made.job}")


@app.command("ls")
def list_runs(
    job: Annotated[str | None, typer.Option(help="Only runs of this job.")] = None,
    state: Annotated[RunState | None, typer.Option(help="Only runs in this state.")] = None,
    label: Annotated[list[str], typer.Option("-l", "--label", help="KEY=VALUE.")] = [],  # noqa: B006
    batch_id: Annotated[str | None, typer.Option("--batch", help="Only runs of a batch.")] = None,
    limit: Annotated[int, typer.Option(help="How many.")] = 20,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List runs, newest first."""
    labels = {k: str(v) for k, v in parse_kv(label, "label").items()}
    with _client(server, token) as c:
        try:
            page = c.runs(job=job, state=state, labels=labels, batch=batch_id, limit=limit)
        except APIError as exc:
            raise _fail(exc) from None
    if as_json:
        out.print_json(page.model_dump_json())
        return
    table = Table("job", "state", "attempt", "exit", "created", "reason")
    table.columns.insert(0, Column("id", no_wrap=True))
    for r in page.runs:
        style = STATE_STYLE.get(r.state.value, "white")
        table.add_row(r.id, r.job, f"[{style}]{r.state.value}[/{style}]", str(r.attempt),
                      "" if r.exit_code is None else str(r.exit_code),
                      r.created_at.strftime("%Y-%m-%d %H:%M:%S"), r.reason or "")  # fmt: skip
    out.print(table)


@app.command()
def show(
    run_id: str, server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Show one run with its attempts."""
    with _client(server, token) as c:
        try:
            run = c.run(run_id)
        except APIError as exc:
            raise _fail(exc) from None
    if as_json:
        out.print_json(run.model_dump_json())
    else:
        _print_run(run)


@app.command()
def logs(
    run_id: str,
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing as it grows.")
    ] = False,
    attempt: Annotated[int | None, typer.Option(help="Attempt number (default: latest).")] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Print a run's log."""
    with _client(server, token) as c:
        try:
            if follow_:
                follow(c, run_id, err)
                return
            _print_log(c, run_id, attempt)
        except APIError as exc:
            raise _fail(exc) from None


@app.command("watch")
def watch_run(run_id: str, server: ServerOpt = None, token: TokenOpt = None) -> None:
    """Watch a run live: state, progress and the tail of its log."""
    with _client(server, token) as c:
        try:
            final = watch(c, run_id, out)
        except APIError as exc:
            raise _fail(exc) from None
    raise typer.Exit(exit_status(final))


@app.command()
def cancel(run_id: str, server: ServerOpt = None, token: TokenOpt = None) -> None:
    """Cancel a queued or running run."""
    with _client(server, token) as c:
        try:
            run = c.cancel(run_id)
        except APIError as exc:
            raise _fail(exc) from None
    out.print(
        f"{run.id} {run.state.value}" + (" (cancelling)" if run.state is RunState.RUNNING else "")
    )


@app.command()
def artifacts(
    run_id: str,
    download: Annotated[Path | None, typer.Option(help="Download all artifacts into DIR.")] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """List a run's artifacts, or download them."""
    with _client(server, token) as c:
        try:
            found = c.artifacts(run_id).artifacts
            if download is None:
                table = Table("path", "size")
                for a in found:
                    table.add_row(a.path, str(a.size))
                out.print(table)
                return
            for a in found:
                dest = c.download(run_id, a.path, download / a.path)
                out.print(f"{dest}")
        except APIError as exc:
            raise _fail(exc) from None


app.add_typer(schedule_app, name="schedule")
token_app = typer.Typer(help="Bearer tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    name: str,
    role: Annotated[str, typer.Option(help="read | submit | admin")] = "read",
    file: Annotated[Path, typer.Option(envvar="RUNYARD_TOKENS_FILE", help="Tokens file.")] = Path(
        "tokens.toml"
    ),
) -> None:
    """Create a token: its hash goes to FILE, the token is printed once (keep it)."""
    try:
        chosen = Role[role.upper()]
    except KeyError:
        raise typer.BadParameter("role is read, submit or admin") from None
    try:
        token = create_token(file, name, chosen)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    out.print(token, markup=False, highlight=False)
    err.print(f"[dim]hash stored in {file}; serve with --tokens {file}[/dim]")


def main() -> None:  # pragma: no cover
    app()
