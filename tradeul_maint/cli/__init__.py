"""Entry points: the console script's quick tick, the typer app, options, and what a person reads."""
