"""The `runyard` command: every subcommand assembled in one place, in the order `--help`
lists them. The commands live with their concept (runs, jobs, batches, schedules, tokens)."""

from __future__ import annotations

import typer

from runyard.cli import batches, jobs, runs, schedules, serve_command, tokens

app = typer.Typer(
    help="runyard: command-line programs as a robust HTTP service.", no_args_is_help=True
)

app.command("serve")(serve_command.serve)
app.command("jobs")(jobs.list_jobs)
app.command("submit")(runs.submit)
app.command("run")(runs.run_sync)
app.command("batch")(batches.batch)
app.command("ls")(runs.list_runs)
app.command("show")(runs.show)
app.command("logs")(runs.logs)
app.command("watch")(runs.watch_run)
app.command("cancel")(runs.cancel)
app.command("artifacts")(runs.artifacts)
app.add_typer(batches.app, name="batches")
app.add_typer(schedules.app, name="schedule")
app.add_typer(tokens.app, name="token")


def main() -> None:  # pragma: no cover
    app()
