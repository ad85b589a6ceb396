"""Render prompts from a plan, call a backend (through the cache), parse candidates, write candidates.jsonl.

``render_requests(plan, ...)`` is pure (no model), so ``--dry-run`` and ``prompts render`` show exactly what
would be sent. ``synthesize(...)`` does one round: it snapshots the templates it used under
``<run>/prompts/<name>@<sha12>.jinja2``, writes ``candidates.jsonl`` (records as in CONTRACTS.md),
``prompts.jsonl`` (each rendered prompt by ``prompt_id`` with its few-shot examples), ``usage.json`` and
``generation_record.json`` (templates and versions, backend, model, sampling, failures).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from activesynth.agent.config import EVOL_METHODS, GenerateConfig, PlannerConfig
from activesynth.agent.fitting import PromptFit, needed_tokens, unusable_warning
from activesynth.agent.llm import make_backend
from activesynth.agent.llm.cache import CachedBackend, LLMCache
from activesynth.agent.llm.parse import parse_output
from activesynth.agent.llm.protocol import PROMPT_TOO_LONG, GenerationRequest, Result, SamplingParams
from activesynth.agent.llm.usage import UsageMeter
from activesynth.agent.planner import Plan, PlanItem
from activesynth.agent.progress import Ticker
from activesynth.agent.runs import Round, Run
from activesynth.prompts import PromptTemplate, get_template, snapshot

__all__ = [
    "PromptJob",
    "SynthesisResult",
    "build_backend",
    "generate_round",
    "plan_round",
    "render_requests",
    "synthesize",
]

log = logging.getLogger(__name__)
_MAX_TOKENS = 1024  # the most max_tokens the data may ask for on its own


@dataclass
class PromptJob:
    """One rendered prompt of a plan item, sampled ``request.n`` times."""

    item: PlanItem
    template: PromptTemplate
    request: GenerationRequest
    source_text: str | None = None
    method: str | None = None
    examples: list[str] = field(default_factory=list)

    def prompt_record(self) -> dict[str, Any]:
        """A ``prompts.jsonl`` line: what the filters need to catch copies of the prompt or its examples."""
        req = self.request
        text = req.prompt if req.mode == "completion" else "\n\n".join(c for _, c in req.messages or ())
        return {
            "prompt_id": req.id,
            "item": self.item.id,
            "label": self.item.label,
            "template": self.template.name,
            "template_version": self.template.version,
            "mode": req.mode,
            "n": req.n,
            "text": text,
            "examples": self.examples,
            "source_text": self.source_text,
        }


@dataclass
class SynthesisResult:
    """What a generation step produced."""

    candidates: list[dict[str, Any]]
    usage: dict[str, Any]
    record: dict[str, Any]
    failures: int = 0
    stats: dict[str, Any] = field(default_factory=dict)


def _sha(*parts: Any) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()


def _variables(
    plan: Plan, item: PlanItem, examples: list[str], n: int, source: str | None, method: str | None
):
    label_text = item.label.replace("_", " ").replace("-", " ")
    contrast = item.pair[1] if item.pair else None
    return {
        "task": plan.task,
        "label": item.label,
        "label_text": label_text,
        "label_definition": item.label_definition or f"is about {label_text}",
        "examples": examples,
        "n": n,
        "cluster_description": item.cluster_description,
        "contrast_label": contrast or "",
        "contrast_label_text": (contrast or "").replace("_", " ").replace("-", " "),
        "contrast_examples": list(item.contrast_examples),
        "source_text": source or "",
        "method": method or "",
        "method_instruction": EVOL_METHODS.get(method or "", method or ""),
    }


def render_requests(
    plan: Plan,
    sampling: SamplingParams | None = None,
    chat_max_tokens: int = 192,
    template_dirs: list[Path] = (),
    template_override: str | None = None,
    fit: PromptFit | None = None,
) -> list[PromptJob]:
    """Render every sample of every plan item into requests; identical prompts share one request (n > 1).

    Each group of ``samples_per_prompt`` samples draws its few-shot examples from the item's pool with a seed
    of (plan seed, item, group), so prompts vary across groups and are the same on every re-run; a rewrite
    prompt changes with every sample's source text. With ``fit``, a prompt that would not fit the model's
    context shows fewer examples (down to one, then shortened ones) until it fits.
    """
    sampling = sampling or SamplingParams()
    cfg = PlannerConfig.model_validate(plan.config) if plan.config else PlannerConfig()
    jobs: dict[str, PromptJob] = {}
    order: list[str] = []
    for item in plan.items:
        if item.n_texts <= 0:
            continue
        tmpl = get_template(template_override or item.template, template_dirs)
        n_samples = item.n_samples or max(1, item.n_texts)
        per_prompt = max(1, -(-item.n_texts // n_samples))
        methods = item.methods or list(cfg.evol_methods)
        rewrite = "source_text" in tmpl.variables
        for s in range(n_samples):
            # samples of one group share their examples, so they render one prompt (one request, n > 1)
            group = s if rewrite else s // cfg.samples_per_prompt
            rng = random.Random(_sha(cfg.seed, item.id, item.label, group))
            pool = list(item.examples)
            examples = rng.sample(pool, min(cfg.n_examples, len(pool)))
            source = method = None
            if rewrite:
                sources = item.source_texts or item.examples
                source = sources[s % len(sources)] if sources else ""
                method = methods[(s // max(1, len(sources))) % len(methods)] if methods else None
            if tmpl.mode == "completion":
                # a template may name where its output ends (a rewrite after one line, a list at a blank line)
                stops = list(sampling.stop) + [x for x in tmpl.stop if x not in sampling.stop]
                params = sampling.model_copy(update={"stop": stops}) if tmpl.stop else sampling
            else:
                params = sampling.model_copy(update={"max_tokens": chat_max_tokens, "stop": []})

            draw = functools.partial(_render, tmpl, plan, item, per_prompt, source, method)
            rendered, examples = _fitted(draw, examples, tmpl, params, fit)
            prompt_id = _sha(tmpl.version, rendered.text, params.model_dump_json())[:16]
            key = f"{item.id}:{prompt_id}"
            if key in jobs:
                job = jobs[key]
                job.request = GenerationRequest(**{**job.request.__dict__, "n": job.request.n + 1})
                continue
            req = GenerationRequest(
                id=_sha(item.id, prompt_id)[:16],  # unique per item even if two items render the same prompt
                mode=tmpl.mode,
                prompt=rendered.prompt,
                messages=tuple((m["role"], m["content"]) for m in rendered.messages)
                if rendered.messages
                else None,
                sampling=params,
                n=1,
                template=tmpl.name,
                template_version=tmpl.version,
                meta=(
                    ("item", item.id),
                    ("label", item.label),
                    ("family", item.family),
                    ("rewrite", "1" if rewrite else "0"),
                    ("n", str(per_prompt)),
                    ("examples", json.dumps(examples, ensure_ascii=False)),
                ),
            )
            jobs[key] = PromptJob(
                item=item, template=tmpl, request=req, source_text=source, method=method, examples=examples
            )
            order.append(key)
    return [jobs[k] for k in order]


def _render(tmpl: PromptTemplate, plan: Plan, item: PlanItem, n: int, source, method, examples: list[str]):
    return tmpl.render(**_variables(plan, item, examples, n, source, method))


def _request(tmpl: PromptTemplate, rendered, params: SamplingParams) -> GenerationRequest:
    messages = tuple((m["role"], m["content"]) for m in rendered.messages) if rendered.messages else None
    return GenerationRequest(
        id="fit", mode=tmpl.mode, prompt=rendered.prompt, messages=messages, sampling=params
    )


def _fitted(draw, examples: list[str], tmpl: PromptTemplate, params: SamplingParams, fit: PromptFit | None):
    """The rendered prompt with ``examples``, or with fewer (then shortened) ones until it fits the model's
    context; (rendered, examples shown). Without ``fit``, or when nothing helps, the full prompt."""
    rendered = draw(examples)
    if fit is None or fit.fits(_request(tmpl, rendered, params)):
        return rendered, examples
    tries = [examples[:k] for k in range(len(examples) - 1, 0, -1)]
    tries.append([" ".join(e.split()[:40]) for e in examples[:1]])
    for shown in tries:
        shorter = draw(shown)
        if fit.fits(_request(tmpl, shorter, params)):
            log.info(
                "prompt of %s shortened to %d example(s) to fit the model's context", tmpl.ref, len(shown)
            )
            return shorter, shown
    return rendered, examples  # the backend records it as prompt_too_long


def _parse_style(tmpl: PromptTemplate) -> str:
    if tmpl.mode == "chat":
        return "chat"
    return "rewrite" if "source_text" in tmpl.variables else "list"


def build_backend(config: GenerateConfig, cache_path: Path, meter: UsageMeter, stage: str = "generate"):
    """The configured backend behind the call cache."""
    return CachedBackend(make_backend(config.backend), LLMCache(cache_path), meter, stage=stage)


def _code(reason: str | None) -> str:
    """The reason's code (``truncated``, ``no_text``, …); a backend error that is a prompt too long for the
    model's context is counted as ``prompt_too_long``."""
    code = (reason or "").split(":")[0]
    return "prompt_too_long" if code == "backend_error" and PROMPT_TOO_LONG in (reason or "") else code


def candidates_from_results(
    jobs: list[PromptJob],
    results: list[Result],
    round_index: int,
    backend_name: str,
    model_id: str,
    keep_surplus: bool = False,
) -> tuple[list[dict], dict]:
    """Candidate records (CONTRACTS.md) from results; unusable outputs and failures are kept with a reason.

    Texts past a unit's ``n_texts`` are counted as ``surplus`` and dropped, unless ``keep_surplus``."""
    by_req: dict[str, list[Result]] = {}
    for r in results:
        by_req.setdefault(r.request_id, []).append(r)
    wanted = Counter()
    kept = Counter()
    for job in jobs:
        wanted[job.item.id] = job.item.n_texts
    records: list[dict] = []
    stats: Counter = Counter()
    seen_ids: set[str] = set()
    for job in jobs:
        req = job.request
        style = _parse_style(job.template)
        for res in sorted(by_req.get(req.id, []), key=lambda r: r.sample_index):
            if res.error:
                parsed = [("", "unusable", f"backend_error: {res.error}")]
            else:
                parsed = [
                    (p.text, p.status, p.reason) for p in parse_output(res.text, style, res.finish_reason)
                ]
            for k, (text, status, reason) in enumerate(parsed):
                if status == "parsed":
                    if kept[job.item.id] >= wanted[job.item.id]:
                        stats["surplus"] += 1
                        if not keep_surplus:
                            continue
                    kept[job.item.id] += 1
                stats[status if status == "parsed" else f"unusable:{_code(reason)}"] += 1
                cid = _sha(round_index, model_id, req.id, res.sample_index, k, text)[:20]
                if cid in seen_ids:
                    continue
                seen_ids.add(cid)
                records.append(
                    {
                        "id": cid,
                        "round": round_index,
                        "text": text,
                        "label": job.item.label,
                        "cluster": job.item.cluster,
                        "pair": job.item.pair,
                        "template": job.template.name,
                        "template_version": job.template.version,
                        "model": model_id,
                        "backend": backend_name,
                        "sampling": req.sampling.model_dump(mode="json"),
                        "sample_index": res.sample_index,
                        "prompt_id": req.id,
                        "source_text": job.source_text,
                        "status": status,
                        "reason": reason,
                        "plan_item": job.item.id,
                        "evol_method": job.method,
                    }
                )
    short = {i: wanted[i] - kept[i] for i in wanted if kept[i] < wanted[i]}
    stats_out = dict(stats)
    stats_out["items_short"] = short
    return records, stats_out


def synthesize(
    plan: Plan,
    backend,
    round_index: int,
    out_dir: Path | None = None,
    config: GenerateConfig | None = None,
    meter: UsageMeter | None = None,
    prompts_dir: Path | None = None,
    template_override: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> SynthesisResult:
    """One generation step: render, generate (backend should be a :class:`CachedBackend`), parse, write.

    With ``out_dir`` writes ``candidates.jsonl``, ``usage.json`` and ``generation_record.json`` there;
    ``prompts_dir`` receives copies of the template versions used. ``progress`` gets a line with samples
    done / planned, tokens/s and an ETA about every 10 seconds (:class:`~activesynth.agent.progress.Ticker`).
    """
    config = config or GenerateConfig()
    meter = meter or getattr(backend, "meter", None) or UsageMeter(config.prices)
    template_dirs = [prompts_dir] if prompts_dir else []
    sampling, chat_max_tokens = _sized(plan, config, backend)
    fit = PromptFit.for_backend(backend, floor=getattr(config.backend, "n_ctx", 0))
    jobs = render_requests(plan, sampling, chat_max_tokens, template_dirs, template_override, fit)
    templates = {j.template.ref: j.template for j in jobs}
    kept_paths = {}
    if prompts_dir is not None:
        for ref, t in templates.items():
            kept_paths[ref] = str(snapshot(t, prompts_dir))
    n_samples = sum(j.request.n for j in jobs)
    log.info("generating %d samples from %d prompts with %s", n_samples, len(jobs), backend.model_id)
    t0 = time.perf_counter()
    ticker = Ticker(n_samples, "generating", progress or _log_line, unit="samples")
    results = backend.generate(
        [j.request for j in jobs],
        on_result=lambda req, res: ticker.tick(tokens=res.completion_tokens, cached=res.cached),
    )
    seconds = time.perf_counter() - t0
    records, stats = candidates_from_results(
        jobs, results, round_index, backend.name, backend.model_id, keep_surplus=config.keep_surplus
    )
    failures = sum(1 for r in results if r.error)
    if failures:
        log.warning(
            "%d of %d samples failed after retries; they are recorded as unusable", failures, len(results)
        )
    usage = meter.summary()
    record = {
        "round": round_index,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "backend": backend.name,
        "model": backend.model_id,
        "sampling": sampling.model_dump(mode="json"),
        "chat_max_tokens": chat_max_tokens,
        "keep_surplus": config.keep_surplus,
        "templates": [
            {"name": t.name, "version": t.version, "ref": ref, "mode": t.mode, "kept_at": kept_paths.get(ref)}
            for ref, t in templates.items()
        ],
        "prompts": len(jobs),
        "samples": n_samples,
        "failures": failures,
        "cache_hits": sum(1 for r in results if r.cached),
        "candidates": len(records),
        "parsed": sum(1 for r in records if r["status"] == "parsed"),
        "stats": stats,
        "seconds": round(seconds, 3),
        "usage": usage,
        "warning": unusable_warning(stats),
    }
    ticker.done(f"{record['parsed']} texts parsed")
    if record["warning"]:
        log.warning("round %s: %s", round_index, record["warning"])
    if out_dir is not None:
        out = Round(Path(out_dir), round_index)
        out.write_jsonl(Round.CANDIDATES, records)
        out.write_jsonl(Round.PROMPTS, [j.prompt_record() for j in jobs])
        meter.accumulate(out.file(Round.USAGE))  # a round's usage adds up over re-runs
        out.write_json(Round.GENERATION, record)
    return SynthesisResult(candidates=records, usage=usage, record=record, failures=failures, stats=stats)


def _log_line(line: str) -> None:
    log.info("%s", line)


def _sized(plan: Plan, config: GenerateConfig, backend) -> tuple[SamplingParams, int]:
    """Sampling with ``max_tokens`` (and the chat prompts' budget) raised, never lowered, to what one typical
    long text of the data needs; a short-text dataset keeps the configured values."""
    texts = [t for item in plan.items for t in (*item.examples, *item.source_texts)]
    sampling, chat = config.sampling, config.chat_max_tokens
    per_text = needed_tokens(texts)  # an estimate from bytes: no tokenizer is loaded when it is small
    if per_text <= sampling.max_tokens and per_text * plan_texts_per_chat(plan) <= chat:
        return sampling, chat
    per_text = needed_tokens(texts, getattr(backend, "count_tokens", None))
    wanted = min(max(sampling.max_tokens, per_text), _MAX_TOKENS)
    chat = min(max(chat, per_text * plan_texts_per_chat(plan)), _MAX_TOKENS)
    if wanted != sampling.max_tokens:
        log.info(
            "max_tokens %d -> %d: the data's long texts need about %d tokens each",
            sampling.max_tokens,
            wanted,
            per_text,
        )
    return sampling.model_copy(update={"max_tokens": wanted}), chat


def plan_texts_per_chat(plan: Plan) -> int:
    """Texts a chat prompt of this plan asks for."""
    return int((plan.config or {}).get("texts_per_prompt") or PlannerConfig().texts_per_prompt)


# -- run-level steps (used by the CLI and the loop) ------------------------------------------------------


def plan_round(
    run: Run, round_index: int, config: GenerateConfig, replan: bool = False
) -> tuple[Plan, Path, bool]:
    """Load ``round-NN/generation_plan.json`` (a user may have edited it) or make and save a new plan (under
    the run's lock). Returns (plan, path, made_now). Few-shot examples come from the dataset's train and dev
    splits (already PII-scrubbed; test is sealed) and from the report's gold-labelled uncertain texts.
    """
    from activesynth.agent.loader import load_dataset
    from activesynth.agent.planner import Planner, examples_from_dataset

    planner = Planner(config.planner_settings())
    path = run.round(round_index).file(Round.PLAN)
    if path.exists() and not replan:
        plan = Plan.load(path)
        for item in plan.items:
            if item.n_texts > 0 and item.n_samples <= 0:
                item.n_samples = planner.samples_for(item)
        return plan, path, False
    with run.lock():
        report = run.report(round_index)
        examples: dict[str, list[str]] = {}
        counts: dict[str, int] | None = None
        try:
            dataset = load_dataset(run)
            examples = examples_from_dataset(dataset)
            counts = dict(Counter(dataset.train.labels))
        except Exception as exc:  # noqa: BLE001 - the report's texts still give examples
            log.warning("could not load the dataset (%s); few-shot examples come from the report only", exc)
        plan = planner.plan(report, examples, counts, round_index=round_index)
        plan.save(path)
    return plan, path, True


def generate_round(
    run: Run,
    round_index: int | None = None,
    config: GenerateConfig | None = None,
    replan: bool = False,
    backend=None,
    progress: Callable[[str], None] | None = None,
) -> SynthesisResult:
    """Plan (or reuse the plan) and generate one round's candidates into the run folder, under its lock.

    The backend is checked before any work (one-line :class:`~activesynth.agent.llm.BackendError`); calls go
    through the run's LLM cache, so a re-run makes no new call and a killed run resumes. Progress lines
    (about every 10 s) go to ``progress`` and to the run's event log (the chat's ``/status`` and the page).
    """
    config = config or run.config.generate
    n = round_index if round_index is not None else run.latest_round()
    if n is None:
        raise ValueError(f"{run.path}: no rounds yet (run `activesynth report` first)")
    with run.lock():
        plan, _, _ = plan_round(run, n, config, replan=replan)
        meter = UsageMeter(config.prices)
        cache_path = config.cache_path or run.llm_cache_path()
        owned = backend is None
        if backend is None:
            backend = build_backend(config, cache_path, meter)
        elif not isinstance(backend, CachedBackend):  # every call goes through the cache
            backend = CachedBackend(backend, LLMCache(cache_path), meter)
        previous_meter = backend.meter
        backend.meter = meter  # this round's usage only
        backend.check()
        try:

            def tell(line: str) -> None:
                run.log_event("progress", line, n)
                (progress or _log_line)(line)

            result = synthesize(
                plan, backend, n, run.round_dir(n), config, meter, run.prompts_dir, progress=tell
            )
            _record_in_run(run, n, result)
        finally:
            backend.meter = previous_meter
            if owned:
                backend.close()
    return result


def _record_in_run(run: Run, n: int, result: SynthesisResult) -> None:
    rec = run.record()
    templates = dict(rec.get("templates") or {})
    for t in result.record["templates"]:
        templates[t["ref"]] = {"name": t["name"], "version": t["version"], "mode": t["mode"]}
    run.update_record(templates=templates)
    usage_files = run.usage_files()
    if usage_files:
        UsageMeter.merge_files(usage_files, run.path / Run.USAGE)
    r = result.record
    run.log_event(
        "generate",
        f"{r['parsed']} texts parsed from {r['samples']} samples "
        f"({r['cache_hits']} cached, {r['failures']} failed)",
        n,
    )
    if r.get("warning"):
        run.log_event("warning", r["warning"], n)  # the chat's /status and the page show it
