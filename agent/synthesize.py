"""Render prompts from a plan, call a backend (through the cache), parse candidates, write candidates.jsonl.

``render_requests(plan, ...)`` is pure (no model), so ``--dry-run`` and ``prompts render`` show exactly what
would be sent. ``synthesize(...)`` does one round: it snapshots the templates it used under
``<run>/prompts/<name>@<sha12>.jinja2``, writes ``candidates.jsonl`` (records as in CONTRACTS.md),
``prompts.jsonl`` (each rendered prompt by ``prompt_id`` with its few-shot examples), ``usage.json`` and
``generation_record.json`` (templates and versions, backend, model, sampling, failures).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from activesynth.agent.files import write_jsonl
from activesynth.agent.llm import BackendConfig, LocalConfig, make_backend
from activesynth.agent.llm.cache import CachedBackend, LLMCache
from activesynth.agent.llm.parse import parse_output
from activesynth.agent.llm.protocol import GenerationRequest, Result, SamplingParams
from activesynth.agent.llm.usage import PriceTable, UsageMeter
from activesynth.agent.planner import EVOL_METHODS, Plan, PlanItem, PlannerConfig
from activesynth.prompts import PromptTemplate, get_template, snapshot

__all__ = [
    "GenerateConfig",
    "PromptJob",
    "SynthesisResult",
    "build_backend",
    "render_requests",
    "synthesize",
    "write_jsonl",
]

log = logging.getLogger(__name__)


class GenerateConfig(BaseModel):
    """Everything the generation step needs (``generate:`` in a run's config.yaml)."""

    model_config = ConfigDict(extra="forbid")

    backend: BackendConfig = Field(default_factory=LocalConfig, description="local, openai or vllm backend.")
    planner: PlannerConfig = Field(
        default_factory=PlannerConfig, description="Budget allocation and templates."
    )
    sampling: SamplingParams = Field(
        default_factory=SamplingParams,
        description="Sampling of completion prompts (chat prompts: same, with chat_max_tokens, no stops).",
    )
    chat_max_tokens: int = Field(
        192, ge=1, description="max_tokens for chat prompts (they ask for several texts)."
    )
    cache_path: Path | None = Field(
        None,
        description="SQLite LLM cache (None: <run>/llm_cache.sqlite; share one across runs to reuse calls).",
    )
    prices: PriceTable = Field(
        default_factory=PriceTable, description="Prices per model for cost accounting."
    )
    keep_surplus: bool = Field(
        True,
        description="Keep every text a sample yields, also past its unit's n_texts: more candidates per "
        "call at no extra cost (the filters and the loop's quota still decide what is used).",
    )


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
) -> list[PromptJob]:
    """Render every sample of every plan item into requests; identical prompts share one request (n > 1).

    Each group of ``samples_per_prompt`` samples draws its few-shot examples from the item's pool with a seed
    of (plan seed, item, group), so prompts vary across groups and are the same on every re-run; a rewrite
    prompt changes with every sample's source text.
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
            rendered = tmpl.render(**_variables(plan, item, examples, per_prompt, source, method))
            if tmpl.mode == "completion":
                # a template may name where its output ends (a rewrite after one line, a list at a blank line)
                stops = list(sampling.stop) + [x for x in tmpl.stop if x not in sampling.stop]
                params = sampling.model_copy(update={"stop": stops}) if tmpl.stop else sampling
            else:
                params = sampling.model_copy(update={"max_tokens": chat_max_tokens, "stop": []})
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
            )
            jobs[key] = PromptJob(
                item=item, template=tmpl, request=req, source_text=source, method=method, examples=examples
            )
            order.append(key)
    return [jobs[k] for k in order]


def _parse_style(tmpl: PromptTemplate) -> str:
    if tmpl.mode == "chat":
        return "chat"
    return "rewrite" if "source_text" in tmpl.variables else "list"


def build_backend(config: GenerateConfig, cache_path: Path, meter: UsageMeter, stage: str = "generate"):
    """The configured backend behind the call cache."""
    return CachedBackend(make_backend(config.backend), LLMCache(cache_path), meter, stage=stage)


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
                stats[status if status == "parsed" else f"unusable:{(reason or '').split(':')[0]}"] += 1
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
) -> SynthesisResult:
    """One generation step: render, generate (backend should be a :class:`CachedBackend`), parse, write.

    With ``out_dir`` writes ``candidates.jsonl``, ``usage.json`` and ``generation_record.json`` there;
    ``prompts_dir`` receives copies of the template versions used.
    """
    config = config or GenerateConfig()
    meter = meter or getattr(backend, "meter", None) or UsageMeter(config.prices)
    template_dirs = [prompts_dir] if prompts_dir else []
    jobs = render_requests(plan, config.sampling, config.chat_max_tokens, template_dirs, template_override)
    templates = {j.template.ref: j.template for j in jobs}
    kept_paths = {}
    if prompts_dir is not None:
        for ref, t in templates.items():
            kept_paths[ref] = str(snapshot(t, prompts_dir))
    n_samples = sum(j.request.n for j in jobs)
    log.info("generating %d samples from %d prompts with %s", n_samples, len(jobs), backend.model_id)
    t0 = time.perf_counter()
    results = backend.generate([j.request for j in jobs])
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
        "sampling": config.sampling.model_dump(mode="json"),
        "chat_max_tokens": config.chat_max_tokens,
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
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        write_jsonl(out_dir / "candidates.jsonl", records)
        write_jsonl(out_dir / "prompts.jsonl", [j.prompt_record() for j in jobs])
        meter.accumulate(out_dir / "usage.json")  # a round's usage adds up over re-runs
        (out_dir / "generation_record.json").write_text(
            json.dumps(record, indent=2, ensure_ascii=False) + "\n"
        )
    return SynthesisResult(candidates=records, usage=usage, record=record, failures=failures, stats=stats)


# -- run-level steps (used by the CLI and the loop) ------------------------------------------------------


def run_generate_config(run, overrides: dict[str, Any] | None = None) -> GenerateConfig:
    """The run config's ``generate`` section (or defaults) with overrides merged per section.

    A ``backend`` override of another kind replaces the backend section instead of merging into it.
    """
    section = getattr(run.config, "generate", None) if run is not None else None
    if isinstance(section, BaseModel):
        base = section.model_dump()
    elif isinstance(section, dict):
        base = dict(section)
    else:
        base = {}
    for key, value in (overrides or {}).items():
        same_kind = key != "backend" or value.get("kind", base.get(key, {}).get("kind")) == base.get(
            key, {}
        ).get("kind")
        if isinstance(value, dict) and isinstance(base.get(key), dict) and same_kind:
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return GenerateConfig.model_validate(base)


def plan_round(
    run, round_index: int, config: GenerateConfig, replan: bool = False
) -> tuple[Plan, Path, bool]:
    """Load ``round-NN/generation_plan.json`` (a user may have edited it) or make and save a new plan.

    Returns (plan, path, made_now). Few-shot examples come from the dataset's train and dev splits (already
    PII-scrubbed; test is sealed) and from the report's gold-labelled uncertain texts.
    """
    from activesynth.agent.planner import Planner, examples_from_dataset

    planner = Planner(config.planner)
    path = run.round_dir(round_index) / "generation_plan.json"
    if path.exists() and not replan:
        plan = Plan.load(path)
        for item in plan.items:
            if item.n_texts > 0 and item.n_samples <= 0:
                item.n_samples = planner.samples_for(item)
        return plan, path, False
    report = run.report(round_index)
    examples: dict[str, list[str]] = {}
    counts: dict[str, int] | None = None
    try:
        dataset = run.load_dataset()
        examples = examples_from_dataset(dataset)
        counts = dict(Counter(dataset.train.labels))
    except Exception as exc:  # noqa: BLE001 - the report's texts still give examples
        log.warning("could not load the dataset (%s); few-shot examples come from the report only", exc)
    plan = planner.plan(report, examples, counts, round_index=round_index)
    plan.save(path)
    return plan, path, True


def generate_round(
    run,
    round_index: int | None = None,
    config: GenerateConfig | None = None,
    replan: bool = False,
    backend=None,
) -> SynthesisResult:
    """Plan (or reuse the plan) and generate one round's candidates into the run folder.

    The backend is checked before any work (one-line :class:`~agent.llm.BackendError`); calls go through
    the run's LLM cache, so a re-run makes no new call and a killed run resumes. The caller holds the run's
    lock (``with run.lock(): ...``), as the CLI does.
    """
    config = config or run_generate_config(run)
    n = round_index if round_index is not None else run.latest_round()
    if n is None:
        raise ValueError(f"{run.path}: no rounds yet (run `activesynth report` first)")
    plan, _, _ = plan_round(run, n, config, replan=replan)
    meter = UsageMeter(config.prices)
    cache_path = config.cache_path or (run.path / "llm_cache.sqlite")
    owned = backend is None
    if backend is None:
        backend = build_backend(config, cache_path, meter)
    elif not isinstance(backend, CachedBackend):  # every call goes through the cache
        backend = CachedBackend(backend, LLMCache(cache_path), meter)
    previous_meter = backend.meter
    backend.meter = meter  # this round's usage only
    backend.check()
    try:
        result = synthesize(
            plan,
            backend,
            n,
            out_dir=run.round_dir(n),
            config=config,
            meter=meter,
            prompts_dir=run.path / "prompts",
        )
        _record_in_run(run, n, result)
    finally:
        backend.meter = previous_meter
        if owned:
            backend.close()
    return result


def _record_in_run(run, n: int, result: SynthesisResult) -> None:
    rec = run.record()
    templates = dict(rec.get("templates") or {})
    for t in result.record["templates"]:
        templates[t["ref"]] = {"name": t["name"], "version": t["version"], "mode": t["mode"]}
    run.update_record(templates=templates)
    rounds = sorted(
        p / "usage.json" for p in run.path.glob("round-[0-9][0-9]") if (p / "usage.json").exists()
    )
    if rounds:
        UsageMeter.merge_files(rounds, run.path / "usage.json")
    r = result.record
    run.log_event(
        "generate",
        f"{r['parsed']} texts parsed from {r['samples']} samples "
        f"({r['cache_hits']} cached, {r['failures']} failed)",
        n,
    )


def _distinct_n(texts: list[str], n: int = 2) -> float:
    grams, total = set(), 0
    for t in texts:
        toks = t.lower().split()
        for i in range(len(toks) - n + 1):
            grams.add(tuple(toks[i : i + n]))
            total += 1
    return round(len(grams) / total, 4) if total else 0.0


class _FilterHook:
    """The filter chain of ``agent.filtering`` for compare (context built once); without that module every
    parsed text counts as accepted and only parser reasons are reported."""

    def __init__(self, run, n: int) -> None:
        self.run, self.n = run, n
        self.context = None
        try:
            from activesynth.agent.filtering import context_from_run, filter_candidates  # noqa: F401
        except ImportError:
            log.warning(
                "activesynth.agent.filtering is not available; compare counts every parsed text as accepted"
            )
            self.available = False
            return
        self.available = True
        self.context = context_from_run(run, n)

    def __call__(self, records: list[dict]) -> tuple[list[dict], Counter]:
        if not self.available:
            acc = [r for r in records if r["status"] == "parsed"]
            return acc, Counter(f"parser/{r['reason']}" for r in records if r["status"] != "parsed")
        from activesynth.agent.filtering import filter_candidates
        from activesynth.evaluators.base import Candidate
        from activesynth.evaluators.config import FilterConfig

        cfg = getattr(self.run.config, "filter", None)
        cfg = cfg if isinstance(cfg, FilterConfig) else FilterConfig.model_validate(cfg or {})
        out = filter_candidates(
            [Candidate.from_record(r) for r in records], self.context, cfg, self.n, metrics=False
        )
        reasons: Counter = Counter()
        for res in out.outcome.results:
            fd = res.first_drop
            if fd is not None:
                reasons[f"{fd.evaluator}/{fd.code}"] += 1
        return [r.accepted_record() for r in out.outcome.accepted], reasons


def compare_templates(
    run,
    refs: list[str],
    round_index: int | None = None,
    config: GenerateConfig | None = None,
    retrain: bool = True,
    backend=None,
) -> dict[str, Any]:
    """Run several templates (or versions of one) on the same plan, seeds and model; measure each.

    Per version: acceptance rate and first-drop reasons of the filter chain, label fidelity (share of parsed
    texts the round's classifier assigns to the intended label), diversity (distinct-2, mean pairwise
    embedding distance), tokens, and the dev macro-F1 of a classifier retrained on train + accepted texts.
    Candidates go to ``round-NN/compare/<name@sha12>/``; the summary to ``round-NN/compare/<a>_vs_<b>.json``.
    """
    import numpy as np

    from activesynth.agent.planner import Planner

    config = config or run_generate_config(run)
    n = round_index if round_index is not None else run.latest_round()
    if n is None:
        raise ValueError(f"{run.path}: no rounds yet")
    plan, _, _ = plan_round(run, n, config)
    prompts_dir = run.path / "prompts"
    templates = [get_template(r, [prompts_dir]) for r in refs]
    meter = UsageMeter(config.prices)
    owned = backend is None
    backend = backend or build_backend(config, config.cache_path or (run.path / "llm_cache.sqlite"), meter)
    meter = getattr(backend, "meter", meter)
    backend.check()
    planner = Planner(config.planner)
    dataset = run.load_dataset() if retrain else None
    hook = _FilterHook(run, n)
    embedder = getattr(hook.context, "embedder", None) or run.embedder()
    base_f1 = None
    rows = []
    try:
        for tmpl in templates:
            snapshot(tmpl, prompts_dir)
            variant = plan.model_copy(deep=True)
            for item in variant.items:
                item.template = str(snapshot(tmpl, prompts_dir))
                item.n_samples = planner.samples_for(item)
            if hasattr(backend, "stage"):
                backend.stage = f"compare:{tmpl.ref}"
            before = meter.summary()["totals"]
            res = synthesize(
                variant,
                backend,
                n,
                out_dir=run.round_dir(n) / "compare" / tmpl.ref,
                config=config,
                meter=meter,
                prompts_dir=prompts_dir,
            )
            after = meter.summary()["totals"]
            parsed = [r for r in res.candidates if r["status"] == "parsed"]
            accepted, reasons = hook(res.candidates)
            row: dict[str, Any] = {
                "template": tmpl.ref,
                "version": tmpl.version,
                "mode": tmpl.mode,
                "prompts": res.record["prompts"],
                "samples": res.record["samples"],
                "candidates": len(res.candidates),
                "parsed": len(parsed),
                "accepted": len(accepted),
                "acceptance_rate": round(len(accepted) / len(res.candidates), 4) if res.candidates else 0.0,
                "drop_reasons": dict(reasons.most_common()),
                "prompt_tokens": after["prompt_tokens"] - before["prompt_tokens"],
                "completion_tokens": after["completion_tokens"] - before["completion_tokens"],
                "calls": after["calls"] - before["calls"],
                "cache_hits": after["cache_hits"] - before["cache_hits"],
                "failures": res.failures,
                "distinct_2": _distinct_n([r["text"] for r in parsed]),
            }
            clf = getattr(hook.context, "classifier", None)
            if clf is None:
                try:
                    clf = run.load_classifier(n, embedder)
                except Exception as exc:  # noqa: BLE001 - fidelity is then unknown
                    log.warning("no classifier for round %d (%s); label fidelity unknown", n, exc)
            if parsed and clf is not None:
                proba = clf.predict_proba([r["text"] for r in parsed])
                pred = [clf.classes_[i] for i in proba.argmax(axis=1)]
                row["label_fidelity"] = round(
                    float(np.mean([p == r["label"] for p, r in zip(pred, parsed, strict=True)])), 4
                )
            else:
                row["label_fidelity"] = None
            if len(parsed) > 1:
                X = embedder.encode([r["text"] for r in parsed])
                sims = X @ X.T
                k = len(parsed)
                row["embedding_diversity"] = round(float(1 - (sims.sum() - k) / (k * (k - 1))), 4)
            else:
                row["embedding_diversity"] = None
            if retrain and dataset is not None:
                if base_f1 is None:
                    base_f1 = _retrain_f1(run, dataset, embedder, [], [])
                row["dev_macro_f1"] = _retrain_f1(
                    run, dataset, embedder, [r["text"] for r in accepted], [r["label"] for r in accepted]
                )
            rows.append(row)
    finally:
        if owned:
            backend.close()
    summary = {
        "round": n,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": backend.model_id,
        "plan_items": len(plan.items),
        "plan_texts": plan.total_texts,
        "dev_macro_f1_without_synthetic": base_f1,
        "versions": rows,
    }
    out = run.round_dir(n) / "compare" / ("_vs_".join(t.ref for t in templates) + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    summary["path"] = str(out)
    return summary


def _retrain_f1(run, dataset, embedder, texts: list[str], labels: list[str]) -> float:
    from sklearn.metrics import f1_score

    from activesynth.agent.classifier import build_classifier

    clf = build_classifier(run.config.classifier, embedder)
    clf.fit(list(dataset.train.texts) + texts, list(dataset.train.labels) + labels)
    proba = clf.predict_proba(list(dataset.dev.texts))
    pred = [clf.classes_[i] for i in proba.argmax(axis=1)]
    return round(float(f1_score(list(dataset.dev.labels), pred, average="macro")), 4)
