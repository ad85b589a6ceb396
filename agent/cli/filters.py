"""``activesynth filter``: the filter chain again on a round's stored candidates, new settings, no LLM."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from activesynth.agent.cli import common as c
from activesynth.agent.cli.app import app

# flag -> setting; the settings themselves are documented in activesynth.agent.config.filters
FILTER_FLAGS = {
    "rouge_max": "filter.rouge_l.max_f",
    "cosine_max": "filter.embedding_dedup.max_cosine",
    "min_prob": "filter.label_agreement.min_prob",
    "min_margin": "filter.label_agreement.min_margin",
    "leak_rouge_max": "filter.leakage.max_rouge",
    "leak_cosine_max": "filter.leakage.max_cosine",
    "pii_mode": "filter.pii.mode",
}


def print_report(report: dict[str, Any], console=None, examples: int = 1) -> None:
    """Print the per-reason table of a filter report with rich."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"Filter report, round {report.get('round')}", show_lines=False)
    table.add_column("evaluator")
    table.add_column("verdict")
    table.add_column("reason")
    table.add_column("count", justify="right")
    table.add_column("example", overflow="fold", max_width=60)
    style = {"drop": "red", "review": "yellow", "keep": "green"}
    for row in report["reasons"]:
        shown = escape("; ".join(f"[{e['label']}] {e['text']}" for e in row["examples"][:examples]))
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
        console.print(f"[bold yellow]warning:[/] {escape(warning)}")


@app.command("filter")
def filter_cmd(
    run: c.RunOpt,
    round_: Annotated[
        int | None, typer.Option("--round", help="Round (default: latest with candidates).")
    ] = None,
    rouge_max: Annotated[
        float | None, typer.Option("--rouge-max", help="Self-Instruct ROUGE-L F limit.")
    ] = None,
    cosine_max: Annotated[
        float | None, typer.Option("--cosine-max", help="Embedding near-duplicate cosine.")
    ] = None,
    min_prob: Annotated[float | None, typer.Option("--min-prob", help="Least p(intended label).")] = None,
    min_margin: Annotated[
        float | None, typer.Option("--min-margin", help="Least margin over the rival label.")
    ] = None,
    leak_rouge_max: Annotated[
        float | None, typer.Option("--leak-rouge-max", help="ROUGE-L limit to test.")
    ] = None,
    leak_cosine_max: Annotated[
        float | None, typer.Option("--leak-cosine-max", help="Cosine limit to test.")
    ] = None,
    pii_mode: Annotated[str | None, typer.Option("--pii-mode", help="drop or scrub.")] = None,
    order: Annotated[
        str | None, typer.Option("--order", help="Comma-separated evaluator names, in order.")
    ] = None,
    no_leakage_guard: Annotated[
        bool, typer.Option("--no-leakage-guard", help="Allow an --order without the leakage guard.")
    ] = False,
    examples: Annotated[int, typer.Option("--examples", help="Examples per reason printed.")] = 1,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the report without writing any file.")
    ] = False,
    metrics: Annotated[
        bool, typer.Option("--metrics/--no-metrics", help="Compute accepted-set metrics.")
    ] = True,
    set_: c.SetOpt = None,
) -> None:
    """Re-filter stored candidates with new settings (no LLM call); print counts per reason."""
    from activesynth.agent.datasets import DataError
    from activesynth.agent.filtering import FilterInputError, filter_run
    from activesynth.agent.runs import RunError

    if not run.is_dir():
        c.fail(f"{run}: run folder not found")
    r = c.open_run(run)
    given = {
        "rouge_max": rouge_max,
        "cosine_max": cosine_max,
        "min_prob": min_prob,
        "min_margin": min_margin,
        "leak_rouge_max": leak_rouge_max,
        "leak_cosine_max": leak_cosine_max,
        "pii_mode": pii_mode,
    }
    flags: dict[str, Any] = {FILTER_FLAGS[k]: v for k, v in given.items()}
    flags["filter.order"] = [s.strip() for s in order.split(",") if s.strip()] if order else None
    flags["filter.leakage_guard"] = False if no_leakage_guard else None
    cfg = c.apply(r.config, c.changes_from(flags, set_))
    from rich.console import Console

    console = Console(stderr=True)
    try:
        with console.status("filtering") as status:
            show = c.progress_printer(console, status).show
            result = filter_run(
                r, round_, config=cfg.filter, write=not dry_run, metrics=metrics, progress=show
            )
    except (FilterInputError, RunError, DataError, ValueError) as e:
        c.fail(str(e))
    print_report(result.report, examples=examples)
    if result.directory is not None:
        typer.echo(f"wrote decisions.jsonl, accepted.jsonl, filter_report.json in {result.directory}")
