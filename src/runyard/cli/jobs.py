"""`runyard jobs`: the declared jobs, and job files that failed to load."""

from __future__ import annotations

from rich.table import Table

from runyard.cli.options import JsonOpt, ServerOpt, TokenOpt
from runyard.cli.output import connected, err, out, print_json, shown


def list_jobs(server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """List declared jobs and job files that failed to load."""
    with connected(server, token) as c:
        jobs = c.jobs()
    if as_json:
        print_json(jobs)
        return
    table = Table("job", "params", "description")
    for job in jobs.jobs:
        props = job.params_schema.get("properties")  # a server's answer: any JSON at all
        names = ", ".join(str(p) for p in props) if isinstance(props, dict) else ""
        table.add_row(shown(job.name), shown(names), shown(job.description))
    out.print(table)
    for fname, message in jobs.errors.items():
        err.print(f"[red]{shown(fname)}[/red]: {shown(message)}")
