"""`runyard serve`: its options made into Settings (a setting it cannot use refused in one
line each, naming the variable or flag), and the refusal to serve an open address without
tokens. The server itself (cli/serve.py) is imported only when it starts, so client commands
do not load it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runyard.auth import AuthConfigError, load_tokens
from runyard.cli.early_stop import EarlyStop
from runyard.cli.output import err
from runyard.config import Settings, SettingsError

# each option's setting, for an error that names what the user typed
FLAGS = {
    "jobs_dir": "--jobs", "data_dir": "--data-dir", "host": "--host", "port": "--port",
    "capacity": "--capacity", "drain": "--drain", "drain_timeout_s": "--drain-timeout",
    "tokens_file": "--tokens",
}  # fmt: skip
REFUSED = 2  # the status of every refusal to start (cli/serve.py's too)


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
    early = EarlyStop()  # before the server's imports: a stop asked for meanwhile is kept
    from runyard.cli.listen import ListenError, addresses
    from runyard.cli.serve import is_loopback
    from runyard.cli.serve import serve as run_server

    try:
        settings = Settings.from_env(
            flags=FLAGS,
            jobs_dir=jobs,
            data_dir=data_dir,
            host=host,
            port=port,
            capacity=capacity,
            drain=drain or None,
            drain_timeout_s=drain_timeout,
            tokens_file=tokens,
        )
    except SettingsError as exc:
        # plain lines, not the console's: one per problem however wide, nothing wrapped
        for problem in exc.problems:
            typer.echo(f"runyard: refusing to start: {problem}", err=True)
        raise typer.Exit(REFUSED) from None
    try:  # a host that names no address says so first, whatever else is missing
        addresses(settings.host, settings.port)
    except ListenError as exc:
        typer.echo(f"runyard: refusing to start: {exc}", err=True)
        raise typer.Exit(REFUSED) from None
    try:
        has_tokens = bool(load_tokens(settings.tokens_file))
    except AuthConfigError:
        has_tokens = True  # a file that cannot be used: serve refuses it, in one line, below
    if not is_loopback(settings.host) and not has_tokens and not insecure:
        err.print(
            f"[red]refusing to bind {settings.host}:[/red] no tokens are configured, so anyone "
            "who reaches it could run programs. Configure tokens (runyard token create), "
            "bind to 127.0.0.1, or pass --insecure."
        )
        raise typer.Exit(REFUSED)
    run_server(settings, early)
