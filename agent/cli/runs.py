"""``activesynth runs``, ``activesynth compare A B`` (two finished runs), ``activesynth predict``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from activesynth.agent.cli import common as c
from activesynth.agent.cli.app import app


@app.command("runs")
def runs_cmd(
    root: Annotated[Path, typer.Argument(help="Folder holding run folders.")] = Path("runs"),
) -> None:
    """List runs under a folder: dataset, arm, state, rounds, final test accuracy."""
    from rich.console import Console
    from rich.table import Table

    from activesynth.agent.runs import Run, RunError

    t = Table(title=f"Runs under {root}")
    for col in ("run", "dataset", "arm", "state", "rounds", "test acc", "synthetic"):
        t.add_column(col, overflow="fold")
    for path in sorted(p.parent for p in root.glob(f"**/{Run.RECORD}")):
        try:
            run = Run.open(path)
            rec, summary = run.record(), run.summary()
        except (RunError, ValueError):
            t.add_row(str(path), "?", "?", "unreadable", "", "", "")
            continue
        acc, syn = "", ""
        if summary:
            acc, syn = f"{summary['final']['test']['accuracy']:.4f}", str(summary["synthetic_used"])
        elif rec.get("rounds"):
            acc = f"{rec['rounds'][-1].get('test_accuracy', 0):.4f}"
        cfg = run.config
        t.add_row(
            str(path),
            cfg.data.dataset or "files",
            cfg.arm,
            rec.get("state", "?"),
            str(len(run.rounds())),
            acc,
            syn,
        )
    Console().print(t)


@app.command("compare")
def compare_cmd(
    a: Annotated[Path, typer.Argument(help="First run folder.")],
    b: Annotated[Path, typer.Argument(help="Second run folder.")],
) -> None:
    """Compare two finished runs: final test metrics and robustness side by side."""
    from rich.console import Console
    from rich.table import Table

    def load(p: Path) -> dict:
        summary = c.open_run(p).summary()
        if summary is None:
            c.fail(f"{p}: no summary.json (the run has not finished)")
        return summary

    sa, sb = load(a), load(b)
    t = Table(title="Run comparison (test split)")
    for col in ("metric", str(a), str(b), "Δ (b − a)"):
        t.add_column(col, overflow="fold")
    for key in ("accuracy", "macro_f1", "macro_precision", "macro_recall", "ece"):
        va, vb = sa["final"]["test"][key], sb["final"]["test"][key]
        t.add_row(key, f"{va:.4f}", f"{vb:.4f}", f"{vb - va:+.4f}")
    for key in ("synthetic_used", "tokens", "seconds"):
        t.add_row(key, f"{sa[key]:.0f}", f"{sb[key]:.0f}", f"{sb[key] - sa[key]:+.0f}")
    if "robustness" in sa["final"] and "robustness" in sb["final"]:
        ra, rb = sa["final"]["robustness"], sb["final"]["robustness"]
        for kind in ("typos", "casing", "drop_words"):
            va, vb = ra[kind]["accuracy"], rb[kind]["accuracy"]
            t.add_row(f"accuracy with {kind}", f"{va:.4f}", f"{vb:.4f}", f"{vb - va:+.4f}")
        va, vb = ra["attack"]["success_rate"], rb["attack"]["success_rate"]
        t.add_row("attack success rate", f"{va:.3f}", f"{vb:.3f}", f"{vb - va:+.3f}")
    Console().print(t)


@app.command("predict")
def predict_cmd(
    texts: Annotated[Path, typer.Argument(help="CSV/TSV/JSONL/Parquet file of texts.")],
    run: Annotated[Path, typer.Option("--run", help="Run folder whose final (or latest) model to use.")],
    text_column: c.TextColOpt = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write predictions as CSV here.")
    ] = None,
) -> None:
    """Classify texts with a run's trained classifier."""
    import csv

    from rich.console import Console

    from activesynth.agent.datasets import DataError, read_table
    from activesynth.agent.loader import load_classifier
    from activesynth.agent.runs import RunError

    try:
        clf = load_classifier(c.open_run(run))
        rows = read_table(texts, text_column or "text", None)
    except (DataError, RunError) as e:
        c.fail(str(e))
    proba = clf.predict_proba(rows.texts)
    labels = [clf.classes_[i] for i in proba.argmax(axis=1)]
    conf = proba.max(axis=1)
    if output:
        with open(output, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label", "confidence"])
            w.writerows(zip(rows.texts, labels, (f"{x:.4f}" for x in conf), strict=True))
        Console().print(f"wrote {len(labels)} predictions to {output}")
    else:
        for text, lab, x in zip(rows.texts, labels, conf, strict=True):
            print(f"{lab}\t{x:.3f}\t{text}")
