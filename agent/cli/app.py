"""The Typer application every command module adds itself to."""

from __future__ import annotations

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    name="activesynth",
    help="Active Synthesis: targeted synthetic data from a classifier's uncertainty.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def main() -> None:
    app()
