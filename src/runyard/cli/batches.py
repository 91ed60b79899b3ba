"""`runyard batch`: many runs of one job at once, by iterations or a parameter sweep."""

from __future__ import annotations

from typing import Annotated

import typer

from runyard.cli.options import ParamOpt, ServerOpt, TokenOpt, as_declared, parse_kv
from runyard.cli.output import connected, out, shown


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
