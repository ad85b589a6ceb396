"""``activesynth report``: train the target classifier and write round 1's uncertainty report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from activesynth.agent.cli import common as c
from activesynth.agent.cli.app import app


@app.command()
def report(
    out: Annotated[Path, typer.Option("--out", help="Run folder to write (created if missing).")],
    dataset: c.DatasetOpt = None,
    data: c.DataOpt = None,
    train: c.TrainOpt = None,
    dev: c.DevOpt = None,
    pool: c.PoolOpt = None,
    test: c.TestOpt = None,
    text_column: c.TextColOpt = None,
    label_column: c.LabelColOpt = None,
    shots: c.ShotsOpt = None,
    seed: c.SeedOpt = None,
    pii_scrub: c.PiiOpt = None,
    selection_fraction: c.SelectionOpt = None,
    classifier: Annotated[
        str | None,
        typer.Option(help="Target classifier: head, finetune, hf, setfit or custom (set classifier.custom)."),
    ] = None,
    strategy: Annotated[
        str | None, typer.Option(help="entropy, least_confidence, margin, bald, variance or mc_dropout.")
    ] = None,
    clusters: Annotated[int | None, typer.Option(help="Number of clusters (default: automatic).")] = None,
    top_fraction: Annotated[
        float | None, typer.Option(help="Share of dev+pool texts selected as uncertain.")
    ] = None,
    set_: c.SetOpt = None,
    verbose: c.VerboseOpt = False,
) -> None:
    """Train the target classifier and write the uncertainty report into a run folder."""
    c.setup_logging(verbose)
    opts = c.DataOptions(
        dataset,
        data,
        train,
        dev,
        pool,
        test,
        text_column,
        label_column,
        shots,
        seed,
        pii_scrub,
        selection_fraction,
    )
    flags = {
        "seed": seed,
        "classifier.seed": seed,
        "classifier.kind": classifier,
        "uncertainty.strategy": strategy,
        "uncertainty.top_fraction": top_fraction,
        "report.n_clusters": clusters,
    }
    cfg = c.apply(opts.config(), c.changes_from(flags, set_))
    write_report_run(cfg, out)


def write_report_run(cfg, out: Path) -> None:
    """Load the data (bad data: one line, no folder made), create the run under its lock, write round 1."""
    from rich.console import Console

    from activesynth.agent.datasets import DataError, load
    from activesynth.agent.loop import report_round
    from activesynth.agent.runs import Run, RunError

    console = Console()
    try:
        ds = load(cfg.data)
        run = Run.create(out, cfg, command=sys.argv)
        with run.lock(), console.status("starting") as status:
            rep, paths = report_round(run, 1, dataset=ds, progress=c.progress_printer(console, status))
    except (DataError, RunError) as e:
        c.fail(str(e))
    print_summary(rep, console)
    console.print(f"\nReport: [bold]{paths['md']}[/]  JSON: {paths['json']}")
    if "map" in paths:
        console.print(f"Plots: {paths['per_class'].parent}")


def print_summary(rep: dict, console) -> None:
    """Print the report's headline tables."""
    from rich.table import Table

    t = Table(title=f"{rep['dataset']['name']}: target classifier on real data")
    for col in ("split", "accuracy", "macro P", "macro R", "macro F1", "ECE"):
        t.add_column(col)
    for name in ("dev", "test"):
        m = rep["metrics"][name]
        keys = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "ece")
        t.add_row(name, *(f"{m[k]:.3f}" for k in keys))
    console.print(t)
    rows = [
        (r["label"], f"{r['mean_uncertainty']:.3f}", f"{r['dev_error_rate']:.2f}", str(r["n_selected"]))
        for r in rep["per_class"][:8]
    ]
    _table(console, "Most uncertain classes", ("class", "mean unc.", "dev error", "selected"), rows)
    rows = [(r["gold"], r["predicted"], str(r["count"])) for r in rep["confused_pairs"][:8]]
    _table(console, "Top confused pairs (dev)", ("gold", "predicted", "count"), rows)
    rows = [
        (
            str(cl["id"]),
            str(cl["size"]),
            f"{cl['mean_uncertainty']:.3f}",
            ", ".join(list(cl["gold_labels"])[:3]),
            ", ".join(cl["keywords"][:5]),
        )
        for cl in rep["clusters"][:10]
    ]
    cols = ("id", "size", "mean unc.", "top gold labels", "keywords")
    _table(console, f"{len(rep['clusters'])} clusters of uncertain texts", cols, rows)


def _table(console, title: str, columns, rows) -> None:
    from rich.table import Table

    t = Table(title=title)
    for col in columns:
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(*row)
    console.print(t)
