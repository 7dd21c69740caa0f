"""The typer app, for `typer docs/cli_app.py utils docs` (typer loads a file by path; commands.py cannot be)."""

from tradeul_maint.commands import app  # noqa: F401
