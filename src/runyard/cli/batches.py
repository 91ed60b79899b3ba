"""`runyard batch` makes many runs of one job at once, by iterations or a parameter sweep;
`runyard batches` lists, shows and cancels them."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Column, Table

from runyard.cli.options import JsonOpt, ParamOpt, ServerOpt, TokenOpt, as_declared, parse_kv
from runyard.cli.output import connected, err, out, print_json, shown
from runyard.models import RunState
from runyard.schemas import BatchView


def batch(
    job: str,
    param: ParamOpt = [],  # noqa: B006
    iterations: Annotated[int | None, typer.Option(help="N runs with the same params.")] = None,
    sweep: Annotated[
        list[str], typer.Option(help="KEY=[v1,v2,...]: one run per combination.")
    ] = [],  # noqa: B006
    priority: Annotated[int | None, typer.Option(help="Higher runs first.")] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option("--idempotency-key", help="Sent again with it, the batch is made once."),
    ] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Create a batch: --iterations N, or one or more --sweep KEY=[values] (cartesian)."""
    swept: dict[str, str] = {}
    grid = parse_kv(sweep, "sweep", texts=swept) or None
    if grid is not None and not all(isinstance(v, list) for v in grid.values()):
        raise typer.BadParameter("--sweep values are JSON lists, e.g. --sweep seed=[1,2,3]")
    texts: dict[str, str] = {}
    params = parse_kv(param, "param", texts=texts)
    if both := sorted(set(params) & set(grid or {})):  # the sweep took it, silently
        raise typer.BadParameter(f"param {both[0]} is given with -p and with --sweep")
    with connected(server, token) as c:
        declared = as_declared(c, job, {**params, **(grid or {})}, texts, swept)
        params = {k: v for k, v in declared.items() if grid is None or k not in grid}
        grid = {k: v for k, v in declared.items() if k in (grid or {})} or None
        made = c.batch(job, params, iterations=iterations, sweep=grid,
                       priority=priority, idempotency_key=idempotency_key)  # fmt: skip
    out.print(f"{shown(made.id)}  {made.size} runs of {shown(made.job)}")


# `runyard batches ...`: the batches made, beside `runyard batch` that makes one (its JOB
# argument rules out subcommands under the same name)
app = typer.Typer(help="Batches: list, show and cancel.", no_args_is_help=True)
SHOWN_STATES = len(RunState)
MAX_COUNT = 10**15  # more runs than any server holds: a count past it is shown as that


@app.command("ls")
def list_batches(
    limit: Annotated[int, typer.Option(help="How many.", min=1)] = 20,
    cursor: Annotated[str | None, typer.Option(help="The page after this batch id.")] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List batches, newest first, with their runs by state."""
    with connected(server, token) as c:
        page = c.batches(cursor=cursor, limit=limit)
    # a server's answer: no more rows than were asked for, in a table or as JSON
    page = page.model_copy(update={"batches": page.batches[:limit]})
    if as_json:
        print_json(page)
        return
    table = Table(Column("id", no_wrap=True), "job", "size", "created", "done", "runs")
    for b in page.batches:
        created = b.created_at.strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(shown(b.id), shown(b.job), str(b.size), created, "yes" if b.done else "no",
                      _counts(b))  # fmt: skip
    out.print(table)
    if page.next_cursor is not None:  # said on stderr: stdout stays the table
        err.print(f"more: --cursor {shown(page.next_cursor)}")


@app.command("show")
def show_batch(
    batch_id: str, server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Show one batch: its job, size and runs by state (`runyard ls --batch ID` lists them)."""
    with connected(server, token) as c:
        b = c.get_batch(batch_id)
    if as_json:
        print_json(b)
        return
    state = "done" if b.done else "not done"
    out.print(f"{shown(b.id)}  {b.size} runs of {shown(b.job)}, {state}: {_counts(b)}")


@app.command("cancel")
def cancel_batch(batch_id: str, server: ServerOpt = None, token: TokenOpt = None) -> None:
    """Cancel every run of a batch still queued or running."""
    with connected(server, token) as c:
        b = c.cancel_batch(batch_id)
    out.print(f"{shown(b.id)}  {_counts(b)}")


def count(n: int) -> str:
    """A count a server sent, in a few characters whatever its size (10**4000: 4,001 digits)."""
    return str(n) if abs(n) < MAX_COUNT else f"{'-' if n < 0 else ''}over {MAX_COUNT:.0e}"


def _counts(b: BatchView) -> str:
    """Its runs by state, as `queued 7, succeeded 3` (a server's names: made safe to show, and
    no more of them than runyard has states, whatever a server sends)."""
    told = [f"{shown(k)} {count(v)}" for k, v in sorted(b.counts.items())[:SHOWN_STATES]]
    if (more := len(b.counts) - SHOWN_STATES) > 0:
        told.append(f"and {more} more")
    return ", ".join(told) or "no runs"
