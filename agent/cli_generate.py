"""``activesynth generate`` and ``activesynth prompts list|show|render|compare``.

Wire into the CLI with ``register(app)``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import typer

__all__ = ["prompts_app", "register"]

log = logging.getLogger(__name__)

prompts_app = typer.Typer(
    help="Prompt templates: list, show, render, compare versions.", no_args_is_help=True
)


def _fail(message: str, code: int = 2) -> None:
    from activesynth.agent.cli import (
        _fail as fail,  # one error printer (it escapes brackets such as "[vllm]")
    )

    fail(message, code)


def _open_run(path: Path):
    from activesynth.agent.runs import Run, RunError

    try:
        return Run.open(path)
    except RunError as exc:
        _fail(str(exc))


def _overrides(
    backend: str | None,
    model: str | None,
    base_url: str | None,
    api_key_env: str | None,
    runtime: str | None,
    threads: int | None,
    budget: int | None,
    mode: str | None,
    spread: float | None,
    style: str | None,
    max_tokens: int | None,
    temperature: float | None,
    run=None,
) -> dict[str, Any]:
    """Command-line options as GenerateConfig overrides (only those given)."""
    from activesynth.agent.synthesize import run_generate_config

    current = run_generate_config(run).backend.model_dump() if run is not None else {"kind": "local"}
    out: dict[str, Any] = {}
    b: dict[str, Any] = {}
    if backend and backend != current.get("kind"):
        b = {"kind": backend}
        if backend in ("openai", "vllm") and not model:
            _fail(f"--backend {backend} needs --model")
    else:
        b = dict(current)
    for key, val in (
        ("model", model),
        ("base_url", base_url),
        ("api_key_env", api_key_env),
        ("runtime", runtime),
        ("threads", threads),
    ):
        if val is not None:
            b[key] = val
    out["backend"] = b
    planner = {
        k: v
        for k, v in (("budget", budget), ("mode", mode), ("spread", spread), ("style", style))
        if v is not None
    }
    if style is None and b.get("kind") in ("openai", "vllm") and backend:
        planner.setdefault("style", "chat")
    if planner:
        out["planner"] = planner
    sampling = {k: v for k, v in (("max_tokens", max_tokens), ("temperature", temperature)) if v is not None}
    if sampling:
        out["sampling"] = sampling
    return out


_BACKEND_HELP = "local (default), openai (OpenAI-compatible server) or vllm (in-process, GPU)."


def generate_command(
    run: Path = typer.Option(..., "--run", help="Run folder (runs/<id>)."),
    round_: int | None = typer.Option(None, "--round", help="Round (default: the latest)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the plan and the first prompts; call no model."
    ),
    show: int = typer.Option(3, "--show", help="Rendered prompts printed with --dry-run."),
    replan: bool = typer.Option(
        False, "--replan", help="Make a new plan even if generation_plan.json exists."
    ),
    backend: str | None = typer.Option(None, "--backend", help=_BACKEND_HELP),
    model: str | None = typer.Option(
        None, "--model", help="Model: bundled name, path, hub id or server model."
    ),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible server URL (…/v1)."),
    api_key_env: str | None = typer.Option(None, "--api-key-env", help="Env var holding the API key."),
    runtime: str | None = typer.Option(
        None, "--runtime", help="Local runtime: auto, transformers, llama_cpp."
    ),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads for the local backend."),
    budget: int | None = typer.Option(None, "--budget", min=0, help="Texts to generate this round."),
    mode: str | None = typer.Option(None, "--mode", help="targeted, rebalance or untargeted."),
    spread: float | None = typer.Option(
        None, "--spread", min=0, max=1, help="Budget share spread over all classes."
    ),
    style: str | None = typer.Option(None, "--style", help="completion (base models) or chat templates."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", min=1, help="Tokens per completion sample."),
    temperature: float | None = typer.Option(None, "--temperature", min=0, help="Sampling temperature."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress."),
) -> None:
    """Plan a round's synthetic data from its uncertainty report and generate candidates."""
    from pydantic import ValidationError
    from rich.console import Console

    from activesynth.agent.llm import BackendError
    from activesynth.agent.synthesize import generate_round, plan_round, render_requests, run_generate_config

    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    r = _open_run(run)
    n = round_ if round_ is not None else r.latest_round()
    if n is None:
        _fail(f"{run}: no rounds yet (run `activesynth report` first)")
    try:
        cfg = run_generate_config(
            r,
            _overrides(
                backend,
                model,
                base_url,
                api_key_env,
                runtime,
                threads,
                budget,
                mode,
                spread,
                style,
                max_tokens,
                temperature,
                run=r,
            ),
        )
    except ValidationError as exc:
        _fail(
            "invalid generation settings: "
            + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        )
    console = Console()
    changed = any(v is not None for v in (budget, mode, spread, style))
    try:
        plan, path, made = plan_round(r, n, cfg, replan=replan or changed)
    except (OSError, ValueError) as exc:
        _fail(str(exc))
    print_plan(plan, console, path, made)
    if dry_run:
        try:
            jobs = render_requests(plan, cfg.sampling, cfg.chat_max_tokens, [r.path / "prompts"])
        except ValueError as exc:
            _fail(str(exc))
        console.print(
            f"{len(jobs)} prompts, {sum(j.request.n for j in jobs)} samples; first {min(show, len(jobs))}:"
        )
        for job in jobs[:show]:
            req = job.request
            console.rule(f"{job.item.id} {job.item.label} · {job.template.ref} · {req.mode} · n={req.n}")
            text = (
                req.prompt if req.mode == "completion" else "\n".join(f"[{a}] {b}" for a, b in req.messages)
            )
            console.print(text, markup=False, highlight=False)
        console.print("dry run: no model was called.")
        return
    from activesynth.agent.runs import RunError

    try:
        with r.lock():
            result = generate_round(r, n, cfg)
    except (BackendError, RunError) as exc:
        _fail(str(exc))
    rec = result.record
    t = rec["usage"]["totals"]
    console.print(
        f"round {n}: {rec['parsed']} texts from {rec['samples']} samples of {rec['prompts']} prompts "
        f"({rec['cache_hits']} cached); {t['calls']} calls, {t['prompt_tokens']} prompt + "
        f"{t['completion_tokens']} completion tokens, {rec['seconds']:.1f}s"
        + (f", cost {t['cost']} {rec['usage']['currency']}" if t.get("cost") is not None else ""),
        markup=False,
        highlight=False,
    )
    unusable = {k: v for k, v in rec["stats"].items() if k.startswith("unusable")}
    if unusable:
        console.print(f"unusable outputs kept with a reason: {unusable}", markup=False)
    if result.failures:
        console.print(
            f"[yellow]warning:[/] {result.failures} samples failed after retries (recorded as unusable)."
        )
    console.print(f"-> {r.round_dir(n) / 'candidates.jsonl'}", markup=False, highlight=False)


def print_plan(plan, console, path: Path | None = None, made: bool = False) -> None:
    """A readable table of a plan."""
    from rich.table import Table

    title = f"Generation plan ({plan.mode}, {plan.total_texts} texts, {len(plan.items)} units)"
    table = Table(title=title)
    for col in ("id", "label", "template", "texts", "samples", "cluster/pair", "why"):
        table.add_column(col, overflow="fold")
    for i in plan.items:
        where = f"c{i.cluster}" if i.cluster is not None else ""
        if i.pair:
            where = (where + " " if where else "") + f"vs {i.pair[1]}"
        table.add_row(i.id, i.label, i.template, str(i.n_texts), str(i.n_samples), where, i.reason)
    console.print(table)
    if path is not None:
        state = "written" if made else "reused (edit it, or pass --replan)"
        console.print(f"plan {state}: {path}", markup=False, highlight=False)


@prompts_app.command("list")
def prompts_list(
    run: Path | None = typer.Option(None, "--run", help="Also list versions kept by this run."),
) -> None:
    """List templates: name@version, mode, family, variables."""
    from rich.console import Console
    from rich.table import Table

    from activesynth.prompts import list_templates

    dirs = [run / "prompts"] if run else []
    table = Table(title="Prompt templates")
    for col in ("template", "mode", "family", "variables", "description"):
        table.add_column(col, overflow="fold")
    for t in list_templates(dirs):
        table.add_row(t.ref, t.mode, t.family, ", ".join(t.variables), t.description)
    Console().print(table)


@prompts_app.command("show")
def prompts_show(
    name: str = typer.Argument(..., help="name, name@sha12 or a .jinja2 path"),
    run: Path | None = typer.Option(None, "--run", help="Search versions kept by this run too."),
) -> None:
    """Print a template's source and metadata."""
    from activesynth.prompts import TemplateError, get_template

    try:
        t = get_template(name, [run / "prompts"] if run else [])
    except TemplateError as exc:
        _fail(str(exc))
    typer.echo(f"# {t.ref}  mode={t.mode}  family={t.family}  version={t.version}\n# file: {t.path}")
    typer.echo(f"# variables: {', '.join(t.variables)}\n")
    typer.echo(t.source)


@prompts_app.command("render")
def prompts_render(
    name: str = typer.Argument(..., help="name, name@sha12 or a .jinja2 path"),
    run: Path | None = typer.Option(None, "--run", help="Render with this run's plan (latest round)."),
    round_: int | None = typer.Option(None, "--round", help="Round of the plan."),
    item: str | None = typer.Option(None, "--item", help="Plan item id (default: the first)."),
    variables: Path | None = typer.Option(None, "--vars", help="JSON file of variables (instead of a run)."),
    sample: int = typer.Option(0, "--sample", min=0, help="Which sample's example draw to show."),
) -> None:
    """Render a template with a run's plan item or with variables from a JSON file."""
    from activesynth.prompts import TemplateError, get_template

    try:
        t = get_template(name, [run / "prompts"] if run else [])
        if variables is not None:
            typer.echo(t.render(**json.loads(variables.read_text())).text)
            return
        if run is None:
            _fail("give --run DIR (with a plan) or --vars FILE.json")
        from activesynth.agent.planner import Planner
        from activesynth.agent.synthesize import plan_round, render_requests, run_generate_config

        r = _open_run(run)
        n = round_ if round_ is not None else r.latest_round()
        cfg = run_generate_config(r)
        plan, _, _ = plan_round(r, n, cfg)
        items = [i for i in plan.items if item is None or i.id == item]
        if not items:
            _fail(f"no plan item {item!r}; items: {', '.join(i.id for i in plan.items)}")
        one = items[0].model_copy()
        one.template = str(t.path)
        one.n_samples = max(Planner(cfg.planner).samples_for(one), sample + 1)
        jobs = render_requests(plan.model_copy(update={"items": [one]}), cfg.sampling, cfg.chat_max_tokens)
        job = jobs[min(sample, len(jobs) - 1)]
        req = job.request
        typer.echo(f"# {t.ref} · item {one.id} ({one.label}) · sample {sample}\n")
        typer.echo(
            req.prompt if req.mode == "completion" else "\n".join(f"[{a}]\n{b}" for a, b in req.messages)
        )
    except (TemplateError, ValueError) as exc:
        _fail(str(exc))


@prompts_app.command("compare")
def prompts_compare(
    a: str = typer.Argument(..., help="First template (name, name@sha12 or .jinja2 path)."),
    b: str = typer.Argument(..., help="Second template."),
    run: Path = typer.Option(..., "--run", help="Run folder whose plan, seeds and model are used."),
    round_: int | None = typer.Option(None, "--round", help="Round (default: the latest)."),
    retrain: bool = typer.Option(
        True, "--retrain/--no-retrain", help="Retrain on train + accepted, report dev F1."
    ),
    backend: str | None = typer.Option(None, "--backend", help=_BACKEND_HELP),
    model: str | None = typer.Option(None, "--model", help="Model for the backend."),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible server URL."),
    budget: int | None = typer.Option(
        None, "--budget", min=1, help="Texts per version (replans into a new plan)."
    ),
    max_tokens: int | None = typer.Option(None, "--max-tokens", min=1, help="Tokens per completion sample."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress."),
) -> None:
    """Run two template versions on the same plan, seeds and model; compare acceptance, fidelity, F1."""
    from rich.console import Console
    from rich.table import Table

    from activesynth.agent.llm import BackendError
    from activesynth.agent.synthesize import compare_templates, run_generate_config
    from activesynth.prompts import TemplateError

    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    r = _open_run(run)
    cfg = run_generate_config(
        r,
        _overrides(
            backend, model, base_url, None, None, None, budget, None, None, None, max_tokens, None, run=r
        ),
    )
    from activesynth.agent.runs import RunError

    try:
        with r.lock():
            summary = compare_templates(r, [a, b], round_, cfg, retrain=retrain)
    except (BackendError, TemplateError, ValueError, RunError) as exc:
        _fail(str(exc))
    table = Table(title=f"Template comparison, round {summary['round']} ({summary['model']})")
    cols = [
        "template",
        "parsed",
        "accepted",
        "acc. rate",
        "fidelity",
        "distinct-2",
        "emb. div.",
        "tokens in/out",
        "dev macro-F1",
        "top drop reasons",
    ]
    for c in cols:
        table.add_column(c, overflow="fold")
    base = summary.get("dev_macro_f1_without_synthetic")
    for v in summary["versions"]:
        f1 = v.get("dev_macro_f1")
        f1s = "-" if f1 is None else f"{f1:.4f}" + (f" ({f1 - base:+.4f})" if base is not None else "")
        reasons = ", ".join(f"{k} {c}" for k, c in list(v["drop_reasons"].items())[:3])
        table.add_row(
            v["template"],
            str(v["parsed"]),
            str(v["accepted"]),
            f"{v['acceptance_rate']:.2f}",
            "-" if v["label_fidelity"] is None else f"{v['label_fidelity']:.2f}",
            f"{v['distinct_2']:.2f}",
            "-" if v["embedding_diversity"] is None else f"{v['embedding_diversity']:.3f}",
            f"{v['prompt_tokens']}/{v['completion_tokens']}",
            f1s,
            reasons,
        )
    console = Console()
    console.print(table)
    console.print(f"-> {summary['path']}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``generate`` and the ``prompts`` sub-app to the CLI."""
    app.command("generate")(generate_command)
    app.add_typer(prompts_app, name="prompts")
