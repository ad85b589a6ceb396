"""``activesynth prompts list|show|render|compare``: the versioned prompt templates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from activesynth.agent.cli import common as c
from activesynth.agent.cli.app import app
from activesynth.agent.cli.generate import BackendOpt, BaseUrlOpt, MaxTokensOpt, ModelOpt, RoundOpt, TextsOpt

prompts_app = typer.Typer(
    help="Prompt templates: list, show, render, compare versions.", no_args_is_help=True
)
app.add_typer(prompts_app, name="prompts")

TemplateArg = Annotated[str, typer.Argument(help="name, name@sha12 or a .jinja2 path")]
RunSearchOpt = Annotated[Path | None, typer.Option("--run", help="Search versions kept by this run too.")]


def _dirs(run: Path | None) -> list[Path]:
    from activesynth.agent.runs import Run

    return [run / Run.PROMPTS] if run else []


@prompts_app.command("list")
def prompts_list(run: RunSearchOpt = None) -> None:
    """List templates: name@version, mode, family, variables."""
    from rich.console import Console
    from rich.table import Table

    from activesynth.prompts import TemplateError, list_templates

    table = Table(title="Prompt templates")
    for col in ("template", "mode", "family", "variables", "description"):
        table.add_column(col, overflow="fold")
    try:
        for t in list_templates(_dirs(run)):
            table.add_row(t.ref, t.mode, t.family, ", ".join(t.variables), t.description)
    except TemplateError as e:
        c.fail(str(e))
    Console().print(table)


@prompts_app.command("show")
def prompts_show(name: TemplateArg, run: RunSearchOpt = None) -> None:
    """Print a template's source and metadata."""
    from activesynth.prompts import TemplateError, get_template

    try:
        t = get_template(name, _dirs(run))
    except TemplateError as e:
        c.fail(str(e))
    typer.echo(f"# {t.ref}  mode={t.mode}  family={t.family}  version={t.version}\n# file: {t.path}")
    typer.echo(f"# variables: {', '.join(t.variables)}\n")
    typer.echo(t.source)


@prompts_app.command("render")
def prompts_render(
    name: TemplateArg,
    run: Annotated[
        Path | None, typer.Option("--run", help="Render with this run's plan (latest round).")
    ] = None,
    round_: RoundOpt = None,
    item: Annotated[str | None, typer.Option("--item", help="Plan item id (default: the first).")] = None,
    variables: Annotated[
        Path | None, typer.Option("--vars", help="JSON file of variables (instead of a run).")
    ] = None,
    sample: Annotated[int, typer.Option("--sample", min=0, help="Which sample's example draw to show.")] = 0,
) -> None:
    """Render a template (in Jinja's sandbox) with a run's plan item or with variables from a JSON file."""
    from activesynth.agent.runs import RunError
    from activesynth.prompts import TemplateError, get_template

    try:
        t = get_template(name, _dirs(run))
        if variables is not None:
            typer.echo(t.render(**json.loads(variables.read_text(encoding="utf-8"))).text)
            return
        if run is None:
            c.fail("give --run DIR (with a plan) or --vars FILE.json")
        r = c.open_run(run)
        with r.lock():  # the plan may be written
            text = _render_plan_item(r, t, round_, item, sample)
    except (TemplateError, RunError, ValueError, OSError) as e:
        c.fail(str(e))
    typer.echo(text)


def _render_plan_item(run, template, round_: int | None, item: str | None, sample: int) -> str:
    from activesynth.agent.planner import Planner
    from activesynth.agent.synthesize import plan_round, render_requests

    n = round_ if round_ is not None else run.latest_round()
    if n is None:
        c.fail(f"{run.path}: no rounds yet")
    cfg = run.config.generate
    plan, _, _ = plan_round(run, n, cfg)
    items = [i for i in plan.items if item is None or i.id == item]
    if not items:
        c.fail(f"no plan item {item!r}; items: {', '.join(i.id for i in plan.items)}")
    one = items[0].model_copy()
    one.template = str(template.path)
    one.n_samples = max(Planner(cfg.planner_settings()).samples_for(one), sample + 1)
    jobs = render_requests(plan.model_copy(update={"items": [one]}), cfg.sampling, cfg.chat_max_tokens)
    req = jobs[min(sample, len(jobs) - 1)].request
    body = req.prompt if req.mode == "completion" else "\n".join(f"[{a}]\n{b}" for a, b in req.messages)
    return f"# {template.ref} · item {one.id} ({one.label}) · sample {sample}\n\n{body}"


@prompts_app.command("compare")
def prompts_compare(
    a: Annotated[str, typer.Argument(help="First template (name, name@sha12 or .jinja2 path).")],
    b: Annotated[str, typer.Argument(help="Second template.")],
    run: c.RunOpt,
    round_: RoundOpt = None,
    retrain: Annotated[
        bool, typer.Option("--retrain/--no-retrain", help="Retrain on train + accepted.")
    ] = True,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    texts: TextsOpt = None,
    max_tokens: MaxTokensOpt = None,
    set_: c.SetOpt = None,
    verbose: c.VerboseOpt = False,
) -> None:
    """Run two template versions on the same plan, seeds and model; compare acceptance, fidelity, F1."""
    c.setup_logging(verbose)
    from rich.console import Console

    from activesynth.agent.cli.generate import generate_changes
    from activesynth.agent.experiments.templates import compare_templates
    from activesynth.agent.llm import BackendError
    from activesynth.agent.runs import RunError
    from activesynth.prompts import TemplateError

    r = c.open_run(run)
    flags = generate_changes(backend, model, base_url, texts=texts, max_tokens=max_tokens)
    cfg = c.apply(r.config, c.changes_from(flags, set_)).generate
    try:
        with r.lock():
            summary = compare_templates(r, [a, b], round_, cfg, retrain=retrain)
    except (BackendError, TemplateError, ValueError, RunError) as e:
        c.fail(str(e))
    _print_comparison(summary, Console())


def _print_comparison(summary: dict, console) -> None:
    from rich.table import Table

    table = Table(title=f"Template comparison, round {summary['round']} ({summary['model']})")
    cols = (
        "template",
        "parsed",
        "accepted",
        "acc. rate",
        "fidelity",
        "distinct-2",
        "emb. div.",
        "tokens in/out",
        "selection macro-F1",
        "top drop reasons",
    )
    for col in cols:
        table.add_column(col, overflow="fold")
    base = summary.get("selection_macro_f1_without_synthetic")
    for v in summary["versions"]:
        f1 = v.get("selection_macro_f1")
        f1s = "-" if f1 is None else f"{f1:.4f}" + (f" ({f1 - base:+.4f})" if base is not None else "")
        reasons = ", ".join(f"{k} {n}" for k, n in list(v["drop_reasons"].items())[:3])
        fidelity = "-" if v["label_fidelity"] is None else f"{v['label_fidelity']:.2f}"
        diversity = "-" if v["embedding_diversity"] is None else f"{v['embedding_diversity']:.3f}"
        table.add_row(
            v["template"],
            str(v["parsed"]),
            str(v["accepted"]),
            f"{v['acceptance_rate']:.2f}",
            fidelity,
            f"{v['distinct_2']:.2f}",
            diversity,
            f"{v['prompt_tokens']}/{v['completion_tokens']}",
            f1s,
            reasons,
        )
    console.print(table)
    console.print(f"-> {summary['path']}", markup=False, highlight=False)
