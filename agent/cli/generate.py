"""``activesynth generate``: plan a round from its uncertainty report and generate candidate texts."""

from __future__ import annotations

from typing import Annotated

import typer

from activesynth.agent.cli import common as c
from activesynth.agent.cli.app import app

BackendOpt = Annotated[
    str | None,
    typer.Option(
        "--backend", help="local (default), openai (OpenAI-compatible server) or vllm (in-process, GPU)."
    ),
]
ModelOpt = Annotated[
    str | None, typer.Option("--model", help="Model: bundled name, path, hub id or server model.")
]
BaseUrlOpt = Annotated[str | None, typer.Option("--base-url", help="OpenAI-compatible server URL (…/v1).")]
MaxTokensOpt = Annotated[
    int | None, typer.Option("--max-tokens", min=1, help="Tokens per completion sample.")
]
RoundOpt = Annotated[int | None, typer.Option("--round", help="Round (default: the latest).")]
TextsOpt = Annotated[
    int | None,
    typer.Option("--texts", min=0, help="Texts to ask the generator for (generate.planner.n_texts)."),
]


def generate_changes(
    backend=None,
    model=None,
    base_url=None,
    api_key_env=None,
    runtime=None,
    threads=None,
    texts=None,
    mode=None,
    spread=None,
    style=None,
    max_tokens=None,
    temperature=None,
) -> dict:
    """Generation flags as dotted config changes (only those given)."""
    if backend in ("openai", "vllm") and not model:
        c.fail(f"--backend {backend} needs --model")
    return {
        "generate.backend.kind": backend,
        "generate.backend.model": model,
        "generate.backend.base_url": base_url,
        "generate.backend.api_key_env": api_key_env,
        "generate.backend.runtime": runtime,
        "generate.backend.threads": threads,
        "generate.planner.n_texts": texts,
        "generate.planner.mode": mode,
        "generate.planner.spread": spread,
        "generate.planner.style": style,
        "generate.sampling.max_tokens": max_tokens,
        "generate.sampling.temperature": temperature,
    }


@app.command("generate")
def generate_cmd(
    run: c.RunOpt,
    round_: RoundOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan and the first prompts; call no model.")
    ] = False,
    show: Annotated[int, typer.Option("--show", help="Rendered prompts printed with --dry-run.")] = 3,
    replan: Annotated[
        bool, typer.Option("--replan", help="Make a new plan even if generation_plan.json exists.")
    ] = False,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    api_key_env: Annotated[
        str | None, typer.Option("--api-key-env", help="Env var holding the API key.")
    ] = None,
    runtime: Annotated[
        str | None, typer.Option("--runtime", help="Local runtime: auto, transformers, llama_cpp.")
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="CPU threads for the local backend.")
    ] = None,
    texts: TextsOpt = None,
    mode: Annotated[str | None, typer.Option("--mode", help="targeted, rebalance or untargeted.")] = None,
    spread: Annotated[
        float | None, typer.Option("--spread", help="Share of texts spread over all classes.")
    ] = None,
    style: Annotated[
        str | None, typer.Option("--style", help="auto, completion (base models) or chat templates.")
    ] = None,
    max_tokens: MaxTokensOpt = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help="Sampling temperature.")] = None,
    set_: c.SetOpt = None,
    verbose: c.VerboseOpt = False,
) -> None:
    """Plan a round's synthetic data from its uncertainty report and generate candidates."""
    c.setup_logging(verbose)
    from rich.console import Console

    from activesynth.agent.llm import BackendError
    from activesynth.agent.runs import RunError
    from activesynth.agent.synthesize import generate_round, plan_round

    r = c.open_run(run)
    n = round_ if round_ is not None else r.latest_round()
    if n is None:
        c.fail(f"{run}: no rounds yet (run `activesynth report` first)")
    flags = generate_changes(
        backend,
        model,
        base_url,
        api_key_env,
        runtime,
        threads,
        texts,
        mode,
        spread,
        style,
        max_tokens,
        temperature,
    )
    cfg = c.apply(r.config, c.changes_from(flags, set_)).generate
    console = Console()
    changed = any(v is not None for v in (texts, mode, spread, style))
    try:
        with r.lock():  # before the first write (the plan)
            plan, path, made = plan_round(r, n, cfg, replan=replan or changed)
            print_plan(plan, console, path, made)
            if dry_run:
                return _show_prompts(r, plan, cfg, show, console)
            with console.status("generating") as status:
                result = generate_round(r, n, cfg, progress=c.progress_printer(console, status).show)
    except (BackendError, RunError, OSError, ValueError) as e:
        c.fail(str(e))
    _print_result(result, r.round_dir(n), console)


def _show_prompts(run, plan, cfg, show: int, console) -> None:
    from activesynth.agent.synthesize import render_requests

    jobs = render_requests(plan, cfg.sampling, cfg.chat_max_tokens, [run.prompts_dir])
    console.print(
        f"{len(jobs)} prompts, {sum(j.request.n for j in jobs)} samples; first {min(show, len(jobs))}:"
    )
    for job in jobs[:show]:
        req = job.request
        console.rule(f"{job.item.id} {job.item.label} · {job.template.ref} · {req.mode} · n={req.n}")
        text = req.prompt if req.mode == "completion" else "\n".join(f"[{a}] {b}" for a, b in req.messages)
        console.print(text, markup=False, highlight=False)
    console.print("dry run: no model was called.")


def _print_result(result, round_dir, console) -> None:
    rec = result.record
    t = rec["usage"]["totals"]
    console.print(
        f"round {rec['round']}: {rec['parsed']} texts from {rec['samples']} samples of {rec['prompts']} "
        f"prompts ({rec['cache_hits']} cached); {t['calls']} calls, {t['prompt_tokens']} prompt + "
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
    console.print(f"-> {round_dir / 'candidates.jsonl'}", markup=False, highlight=False)


def print_plan(plan, console, path=None, made: bool = False) -> None:
    """A readable table of a plan."""
    from rich.table import Table

    table = Table(title=f"Generation plan ({plan.mode}, {plan.total_texts} texts, {len(plan.items)} units)")
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
