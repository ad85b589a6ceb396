"""``activesynth run`` (the loop, one arm or a comparison of arms) and ``activesynth efficiency``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from activesynth.agent.cli import common as c
from activesynth.agent.cli.app import app

BudgetOpt = Annotated[
    int | None, typer.Option("--budget", help="Accepted synthetic texts per arm (loop.budget).")
]
RoundsOpt = Annotated[int | None, typer.Option("--rounds", help="Most rounds (loop.rounds).")]
ModelOpt = Annotated[
    str | None, typer.Option("--model", help="Generator model (name, local path or served model).")
]


@app.command("run")
def run_cmd(
    out: Annotated[
        Path, typer.Option("--out", help="Run folder (or comparison folder with --compare).")
    ] = Path("runs/run"),
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
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML run config; flags override it.")
    ] = None,
    budget: BudgetOpt = None,
    rounds: RoundsOpt = None,
    arm: Annotated[
        str | None, typer.Option(help="active, untargeted or real-only (without --compare).")
    ] = None,
    compare: Annotated[bool, typer.Option("--compare", help="Run real-only, untargeted and active.")] = False,
    seeds: Annotated[
        str | None, typer.Option(help="Comma-separated seeds for --compare, e.g. 0,1,2.")
    ] = None,
    backend: Annotated[str | None, typer.Option(help="LLM backend: local, openai or vllm.")] = None,
    model: ModelOpt = None,
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible server URL (backend openai).")
    ] = None,
    api_key_env: Annotated[
        str | None, typer.Option("--api-key-env", help="Environment variable holding the API key.")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue the run or comparison in DIR.")
    ] = None,
    mlflow: Annotated[
        bool, typer.Option("--mlflow", help="Log the run to MLflow (needs the 'mlflow' extra).")
    ] = False,
    mlflow_uri: Annotated[
        str | None,
        typer.Option(
            "--mlflow-uri",
            help="MLflow tracking URI (implies --mlflow); default sqlite:///<parent>/mlflow.db.",
        ),
    ] = None,
    set_: c.SetOpt = None,
    verbose: c.VerboseOpt = False,
) -> None:
    """Run the active-synthesis loop (optionally against real-only and untargeted baselines)."""
    c.setup_logging(verbose)
    if resume is not None:
        out, cfg, seed_list, compare = _resumed(resume, compare)
    else:
        cfg, seed_list = _from_flags(locals())
    _preflight(cfg)
    if compare:
        _compare(out, cfg, seed_list)
    else:
        _single(out, cfg)


def _from_flags(f: dict):
    """The run config from ``--config`` and the command line's flags; the seeds to run."""
    base = _load_config(f["config"]) if f["config"] else None
    data = [f[k] for k in ("dataset", "data", "train", "dev", "pool", "test", "text_column", "label_column")]
    rest = [f[k] for k in ("shots", "seed", "pii_scrub", "selection_fraction")]
    cfg = c.DataOptions(*data, *rest).config(base)
    flags = {
        "seed": f["seed"],
        "arm": f["arm"],
        "loop.budget": f["budget"],
        "loop.rounds": f["rounds"],
        "generate.backend.kind": f["backend"],
        "generate.backend.model": f["model"],
        "generate.backend.base_url": f["base_url"],
        "generate.backend.api_key_env": f["api_key_env"],
        "tracking.mlflow": True if (f["mlflow"] or f["mlflow_uri"]) else None,
        "tracking.tracking_uri": f["mlflow_uri"],
    }
    cfg = c.apply(cfg, c.changes_from(flags, f["set_"]))
    return cfg, (c.int_list("seeds", f["seeds"], 0) if f["seeds"] else [cfg.seed])


def _load_config(path: Path):
    from activesynth.agent.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as e:
        c.fail(str(e))


def _resumed(path: Path, compare: bool):
    from activesynth.agent.config import RunConfig
    from activesynth.agent.runs import Comparison

    saved = Comparison(path).saved()
    if saved is not None:
        return path, RunConfig.model_validate(saved["config"]), saved["seeds"], True
    cfg = c.open_run(path).config
    return path, cfg, [cfg.seed], compare


def _preflight(cfg) -> None:
    """Everything that can be checked before a folder is made: tracking extra, filter chain, the data."""
    from activesynth.agent.datasets import DataError, load
    from activesynth.agent.loop import check_config

    try:
        if cfg.tracking.mlflow:
            from activesynth.agent.tracking import require_mlflow

            require_mlflow()  # mlflow missing: one line naming the extra, before any folder is made
        check_config(cfg)
        load(cfg.data)  # bad data: one line and no half-made run folder
    except (DataError, ValueError, RuntimeError) as e:
        c.fail(str(e))


def _single(out: Path, cfg) -> None:
    from rich.console import Console

    from activesynth.agent.datasets import DataError
    from activesynth.agent.loop import run_loop
    from activesynth.agent.runs import Run, RunError

    console = Console()
    try:
        run = Run.create(out, cfg, command=sys.argv)
        with run.lock(), console.status("starting") as status:
            summary = run_loop(run, c.progress_printer(console, status))
    except (DataError, RunError, ValueError) as e:
        c.fail(str(e))
    print_rounds(summary, console)


def _compare(out: Path, cfg, seeds: list[int]) -> None:
    from rich.console import Console

    from activesynth.agent.datasets import DataError
    from activesynth.agent.experiments.arms import compare_arms
    from activesynth.agent.runs import RunError

    console = Console()
    try:
        with console.status("starting") as status:
            data = compare_arms(out, cfg, seeds, progress=c.progress_printer(console, status))
    except (DataError, RunError, ValueError) as e:
        c.fail(str(e))
    print_comparison(data, console)
    console.print(f"\nComparison: [bold]{out / 'comparison.md'}[/]  plot: {out / 'comparison.png'}")


def print_rounds(summary: dict, console) -> None:
    from rich.table import Table

    t = Table(title=f"{summary['arm']} run: stopped on {summary['stop_reason']}")
    for col in ("round", "synthetic", "weight", "test acc", "test macro-F1", "selection F1", "rolled back"):
        t.add_column(col)
    for h in summary["rounds"]:
        t.add_row(
            str(h["round"]),
            str(h.get("accepted_total", 0)),
            str(h.get("weight")),
            f"{h['test_accuracy']:.4f}",
            f"{h['test_macro_f1']:.4f}",
            f"{h['selection_macro_f1']:.4f}",
            str(h.get("rolled_back", False)),
        )
    console.print(t)


def print_comparison(data: dict, console) -> None:
    from rich.table import Table

    def f(d):
        return f"{100 * d['mean']:.2f} ± {100 * d['sd']:.2f}"

    t = Table(title=f"Test metrics over seeds {data['seeds']} (points, mean ± sd)")
    for col in ("arm", "accuracy", "Δ vs real-only", "macro-F1", "synthetic", "tokens", "seconds"):
        t.add_column(col)
    for arm, row in data["table"].items():
        delta = f(row["delta_accuracy_vs_real"]) if "delta_accuracy_vs_real" in row else "—"
        t.add_row(
            arm,
            f(row["accuracy"]),
            delta,
            f(row["macro_f1"]),
            f"{row['synthetic_used']['mean']:.0f}",
            f"{row['tokens']['mean']:.0f}",
            f"{row['seconds']['mean']:.0f}",
        )
    console.print(t)


@app.command("efficiency")
def efficiency_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for the runs, efficiency.json and the plot.")],
    dataset: c.DatasetOpt = None,
    data: c.DataOpt = None,
    train: c.TrainOpt = None,
    dev: c.DevOpt = None,
    pool: c.PoolOpt = None,
    test: c.TestOpt = None,
    text_column: c.TextColOpt = None,
    label_column: c.LabelColOpt = None,
    pii_scrub: c.PiiOpt = None,
    selection_fraction: c.SelectionOpt = None,
    shots: Annotated[
        str, typer.Option(help="Comma-separated shot counts (training texts sampled per class).")
    ] = "5,10,20",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0",
    budget: BudgetOpt = None,
    rounds: RoundsOpt = None,
    model: ModelOpt = None,
    set_: c.SetOpt = None,
    verbose: c.VerboseOpt = False,
) -> None:
    """Real-only vs active at several shot counts: how many real labels per class synthesis is worth.

    Data as for `run` (--dataset or user files; banking77 when none is given). Every class needs at least as
    many training texts as the largest shot count."""
    c.setup_logging(verbose)
    from rich.console import Console
    from rich.table import Table

    from activesynth.agent.datasets import DataError
    from activesynth.agent.experiments.efficiency import efficiency
    from activesynth.agent.runs import RunError

    shot_list, seed_list = c.int_list("shots", shots, 1), c.int_list("seeds", seeds, 0)
    if not any((dataset, data, train, dev, pool, test)):
        dataset = "banking77"
    cfg = c.DataOptions(
        dataset,
        data,
        train,
        dev,
        pool,
        test,
        text_column,
        label_column,
        1,
        seed_list[0],
        pii_scrub,
        selection_fraction,
    ).config()
    flags = {
        "seed": seed_list[0],
        "loop.budget": budget,
        "loop.rounds": rounds,
        "generate.backend.model": model,
    }
    cfg = c.apply(cfg, c.changes_from(flags, set_))
    console = Console()
    try:
        with console.status("starting") as status:
            res = efficiency(out, cfg, shot_list, seed_list, progress=c.progress_printer(console, status))
    except (DataError, RunError, ValueError) as e:
        c.fail(str(e))
    t = Table(title="Data efficiency (test accuracy)")
    for col in (
        "shots",
        "real-only",
        "active",
        "real shots needed to match",
        "synthesis worth (shots/class)",
    ):
        t.add_column(col)
    for k, w in res["worth"].items():
        eq = "beyond range" if w["equivalent_real_shots"] is None else f"{w['equivalent_real_shots']:.1f}"
        worth = "—" if w["worth_shots"] is None else f"{w['worth_shots']:+.1f}"
        t.add_row(k, f"{w['real_only_accuracy']:.4f}", f"{w['active_accuracy']:.4f}", eq, worth)
    console.print(t)
    console.print(f"plot: {out / 'efficiency.png'}")
