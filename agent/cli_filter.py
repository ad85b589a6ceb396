"""``activesynth filter``: re-run the filter chain on a round's stored candidates with new thresholds.

No LLM is called. Wire it in with ``register(app)``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer

__all__ = ["filter_command", "print_report", "register"]

log = logging.getLogger(__name__)


def print_report(report: dict[str, Any], console=None, examples: int = 1) -> None:
    """Print the per-reason table of a filter report with rich."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"Filter report, round {report.get('round')}", show_lines=False)
    for col, kw in (
        ("evaluator", {}),
        ("verdict", {}),
        ("reason", {}),
        ("count", {"justify": "right"}),
        ("example", {"overflow": "fold", "max_width": 60}),
    ):
        table.add_column(col, **kw)
    style = {"drop": "red", "review": "yellow", "keep": "green"}
    for row in report["reasons"]:
        shown = "; ".join(f"[{e['label']}] {e['text']}" for e in row["examples"][:examples])
        verdict = row["verdict"]
        table.add_row(
            row["evaluator"], f"[{style.get(verdict, '')}]{verdict}[/]", row["code"], str(row["count"]), shown
        )
    console.print(table)
    first = ", ".join(f"{k} {v}" for k, v in report.get("first_drops", {}).items()) or "none"
    console.print(
        f"{report['n_accepted']} of {report['n_candidates']} accepted, {report['n_dropped']} dropped, "
        f"{report['n_review']} flagged for review. First drop by: {first}",
        markup=False,
        highlight=False,
    )
    warning = (report.get("accepted_metrics") or {}).get("collapse_warning")
    if warning:
        console.print(f"[bold yellow]warning:[/] {warning}")


def filter_command(
    run: Path = typer.Option(..., "--run", help="Run folder (runs/<id>)."),
    round_: int | None = typer.Option(None, "--round", help="Round (default: latest with candidates)."),
    rouge_max: float | None = typer.Option(None, "--rouge-max", help="Self-Instruct ROUGE-L F limit."),
    cosine_max: float | None = typer.Option(None, "--cosine-max", help="Embedding near-duplicate cosine."),
    min_prob: float | None = typer.Option(None, "--min-prob", help="Least p(intended label)."),
    min_margin: float | None = typer.Option(None, "--min-margin", help="Least margin over the rival label."),
    leak_rouge_max: float | None = typer.Option(None, "--leak-rouge-max", help="ROUGE-L limit to test."),
    leak_cosine_max: float | None = typer.Option(None, "--leak-cosine-max", help="Cosine limit to test."),
    pii_mode: str | None = typer.Option(None, "--pii-mode", help="drop or scrub."),
    order: str | None = typer.Option(None, "--order", help="Comma-separated evaluator names, in order."),
    examples: int = typer.Option(1, "--examples", help="Examples per reason printed."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the report without writing any file."),
    metrics: bool = typer.Option(True, "--metrics/--no-metrics", help="Compute accepted-set metrics."),
) -> None:
    """Re-filter stored candidates with new thresholds (no LLM call); print counts per reason."""
    from pydantic import ValidationError

    from activesynth.agent.datasets import DataError
    from activesynth.agent.filtering import FilterInputError, filter_run
    from activesynth.agent.runs import RunError

    overrides = {
        "rouge_l.max_f": rouge_max,
        "embedding_dedup.max_cosine": cosine_max,
        "label_agreement.min_prob": min_prob,
        "label_agreement.min_margin": min_margin,
        "leakage.max_rouge": leak_rouge_max,
        "leakage.max_cosine": leak_cosine_max,
        "pii.mode": pii_mode,
        "order": [s.strip() for s in order.split(",") if s.strip()] if order else None,
    }
    try:
        result = filter_run(run, round_, overrides=overrides, write=not dry_run, metrics=metrics)
    except (FilterInputError, RunError, DataError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        typer.echo(f"error: invalid filter option {where}: {first['msg']}", err=True)
        raise typer.Exit(2) from None
    print_report(result.report, examples=examples)
    if result.directory is not None:
        typer.echo(f"wrote decisions.jsonl, accepted.jsonl, filter_report.json in {result.directory}")


def register(app: typer.Typer) -> None:
    """Add the ``filter`` command to ``app``."""
    app.command("filter")(filter_command)
