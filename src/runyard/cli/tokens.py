"""`runyard token ...`: bearer tokens, whose hashes live in the tokens file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runyard.auth import Role, create_token
from runyard.cli.output import err, out, shown

app = typer.Typer(help="Bearer tokens.", no_args_is_help=True)


@app.command("create")
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
    err.print(f"[dim]hash stored in {shown(file)}; serve with --tokens {shown(file)}[/dim]")
