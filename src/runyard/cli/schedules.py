"""`runyard schedule ...`: create, list, pause, resume and remove schedules."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Column, Table

from runyard.cli.options import as_declared, parse_kv
from runyard.cli.output import connected, out, shown

app = typer.Typer(help="Schedules: runs submitted by cron or at an interval.", no_args_is_help=True)

# unlike the run commands' options, shown without help text (as they always were)
ServerOpt = Annotated[str | None, typer.Option("--server", envvar="RUNYARD_SERVER")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="RUNYARD_TOKEN")]


def _run(action: str, server: str | None, token: str | None, **kw: object) -> object:
    with connected(server, token) as c:
        return getattr(c, action)(**kw)


@app.command("create")
def create(
    job: str,
    param: Annotated[list[str], typer.Option("-p", "--param", help="KEY=VALUE.")] = [],  # noqa: B006
    cron: Annotated[str | None, typer.Option(help="Cron expression, in UTC.")] = None,
    every: Annotated[float | None, typer.Option(help="Interval in seconds.")] = None,
    overlap: Annotated[str, typer.Option(help="skip | queue | allow")] = "skip",
    catch_up: Annotated[str, typer.Option(help="once | none")] = "once",
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Create a schedule for JOB (--cron or --every)."""
    texts: dict[str, str] = {}
    params = parse_kv(param, "param", texts=texts)
    with connected(server, token) as c:
        made = c.create_schedule(job=job, params=as_declared(c, job, params, texts), cron=cron,
                                 interval_s=every, overlap=overlap, catch_up=catch_up)  # fmt: skip
    out.print(shown(getattr(made, "id", "")))


@app.command("ls")
def list_schedules(server: ServerOpt = None, token: TokenOpt = None) -> None:
    """List schedules with their state."""
    table = Table(Column("id", no_wrap=True), "job", "when", "overlap", "paused", "fires", "skips",
                  "fails", "next")  # fmt: skip
    failing = []
    for s in _run("schedules", server, token):  # type: ignore[attr-defined]
        # neither (a server's answer, not one runyard makes): shown as nothing, not a traceback
        when = s.cron or (f"every {s.interval_s:g}s" if s.interval_s is not None else "")
        nxt = s.next_fire_at.strftime("%Y-%m-%d %H:%M:%S") if s.next_fire_at else ""
        table.add_row(shown(s.id), shown(s.job), shown(when), shown(s.overlap), str(s.paused),
                      str(s.fire_count), str(s.skip_count), str(s.fail_count), nxt)  # fmt: skip
        if s.last_error is not None:
            failing.append(s)
    out.print(table)
    for s in failing:  # a broken schedule says why, not only that its fires made nothing
        out.print(f"{shown(s.id)}: {shown(s.last_error)}")


@app.command("pause")
def pause(schedule_id: str, server: ServerOpt = None, token: TokenOpt = None) -> None:
    """Stop firing (the schedule is kept)."""
    _run("update_schedule", server, token, schedule_id=schedule_id, paused=True)
    out.print(f"{shown(schedule_id)} paused")


@app.command("resume")
def resume(schedule_id: str, server: ServerOpt = None, token: TokenOpt = None) -> None:
    """Fire again from the next due time."""
    _run("update_schedule", server, token, schedule_id=schedule_id, paused=False)
    out.print(f"{shown(schedule_id)} resumed")


@app.command("rm")
def remove(schedule_id: str, server: ServerOpt = None, token: TokenOpt = None) -> None:
    """Delete a schedule (its runs are kept)."""
    _run("delete_schedule", server, token, schedule_id=schedule_id)
    out.print(f"{shown(schedule_id)} deleted")
