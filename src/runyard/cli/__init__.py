"""The `runyard` command line (typer + rich)."""
