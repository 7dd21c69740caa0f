"""The typer app, for `typer docs/cli_app.py utils docs` (typer loads a file by path; cli/commands.py cannot be)."""

from tradeul_maint.cli.commands import app  # noqa: F401
