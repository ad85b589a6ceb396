"""Filter a round's candidates: run the evaluator chain, write decisions, accepted texts and a report.

Reads ``round-NN/candidates.jsonl``; writes ``round-NN/decisions.jsonl`` (every candidate with every
decision), ``round-NN/accepted.jsonl`` (accepted candidate records) and ``round-NN/filter_report.json``.
No LLM is called unless the caller passes an ``llm_judge``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from activesynth.agent.config import FilterConfig
from activesynth.agent.runs import Round, Run, RunError, read_jsonl
from activesynth.evaluators.base import Candidate, FilterContext, LLMJudge
from activesynth.evaluators.chain import FilterChain, FilterOutcome, filter_report

__all__ = [
    "FilterInputError",
    "FilterResult",
    "context_from_run",
    "filter_candidates",
    "filter_run",
    "load_candidates",
    "previous_accepted_texts",
]

log = logging.getLogger(__name__)


class FilterInputError(ValueError):
    """Bad filter input: a missing file or a malformed line (the message names file and line)."""


def _lines(path: Path):
    try:
        yield from read_jsonl(path)
    except RunError as e:
        raise FilterInputError(str(e)) from None


def load_candidates(path: Path) -> list[Candidate]:
    """Candidates from a candidates.jsonl file; duplicate ids and missing fields are errors."""
    out: list[Candidate] = []
    seen: dict[str, int] = {}
    for lineno, obj in _lines(path):
        try:
            cand = Candidate.from_record(obj)
        except ValueError as exc:
            raise FilterInputError(f"{path}:{lineno}: {exc}") from None
        if cand.id in seen:
            raise FilterInputError(
                f"{path}:{lineno}: duplicate candidate id {cand.id} (first on line {seen[cand.id]})"
            )
        seen[cand.id] = lineno
        out.append(cand)
    return out


def previous_accepted_texts(run: Run, before_round: int) -> list[str]:
    """Texts accepted in rounds before ``before_round`` (in round order)."""
    texts: list[str] = []
    for n in run.rounds():
        if n < before_round:
            texts.extend(str(obj.get("text", "")) for obj in run.round(n).read_jsonl(Round.ACCEPTED))
    return texts


class FilterResult:
    """What one filtering pass produced: the outcome (per-candidate decisions) and the report."""

    def __init__(self, outcome: FilterOutcome, report: dict[str, Any], directory: Path | None) -> None:
        self.outcome = outcome
        self.report = report
        self.directory = directory


def filter_candidates(
    candidates: list[Candidate],
    context: FilterContext,
    config: FilterConfig | None = None,
    round_index: int | None = None,
    out_dir: Path | None = None,
    metrics: bool = True,
    previous_report: dict[str, Any] | None = None,
    chain: FilterChain | None = None,
    progress: Callable[[str], None] | None = None,
) -> FilterResult:
    """Run the chain; with ``out_dir`` write decisions.jsonl, accepted.jsonl and filter_report.json there.

    ``progress`` gets the chain's progress lines (evaluators done, candidates still in, ETA).

    With ``metrics`` (and an embedder in the context) the report gets ``accepted_metrics`` of the accepted
    set, including a collapse warning against ``previous_report``'s.
    """
    config = config or FilterConfig()
    outcome = (chain or FilterChain.from_config(config)).run(candidates, context, progress=progress)
    report = filter_report(
        outcome, round_index, examples=config.report_examples, config=config.model_dump(mode="json")
    )
    if metrics and context.embedder is not None:
        from activesynth.evaluators.metrics.synthetic import accepted_set_metrics

        acc = outcome.accepted
        previous = (previous_report or {}).get("accepted_metrics")
        report["accepted_metrics"] = accepted_set_metrics(
            [r.candidate.text for r in acc],
            [r.candidate.label for r in acc],
            list(context.real_texts),
            context.embedder,
            all_labels=list(context.labels) or None,
            previous=previous,
        )
    if out_dir is not None:
        out = Round(Path(out_dir), round_index or 0)
        out.write_jsonl(Round.DECISIONS, (r.to_dict() for r in outcome.results))
        out.write_jsonl(Round.ACCEPTED, (r.accepted_record() for r in outcome.accepted))
        out.write_json(Round.FILTER_REPORT, report)
        log.info("filter: %d of %d accepted -> %s", report["n_accepted"], report["n_candidates"], out_dir)
    return FilterResult(outcome, report, out_dir)


def _round_prompts(rnd: Round) -> tuple[dict[str, str], list[str]]:
    """Prompts by ``prompt_id`` and the few-shot examples they showed, from ``prompts.jsonl``."""
    prompts: dict[str, str] = {}
    examples: list[str] = []
    for rec in rnd.read_jsonl(Round.PROMPTS):
        if rec.get("prompt_id") and isinstance(rec.get("text"), str):
            prompts[rec["prompt_id"]] = rec["text"]
        examples.extend(e for e in rec.get("examples") or [] if isinstance(e, str))
    return prompts, examples


def context_from_run(run: Run, n: int, llm_judge: LLMJudge | None = None) -> FilterContext:
    """A filter context from a run: train texts, earlier accepted texts, the round's classifier, the run's
    embedder, the round's prompts and few-shot examples, and the sealed test split."""
    from activesynth.agent.loader import load_classifier, load_dataset, load_embedder

    dataset = load_dataset(run)
    embedder = load_embedder(run.config.embed)
    prompts, few_shot = _round_prompts(run.round(n))
    return FilterContext(
        labels=list(dataset.labels),
        real_texts=list(dataset.train.texts),
        accepted_texts=previous_accepted_texts(run, n),
        labelled=(
            list(dataset.train.texts) + list(dataset.dev.texts),
            list(dataset.train.labels) + list(dataset.dev.labels),
        ),
        embedder=embedder,
        classifier=load_classifier(run, n, embedder),
        test=dataset.test,
        prompts=prompts,
        few_shot_texts=few_shot,
        generator=run.config.generate.backend,
        task=_task(run, n),
        llm_cache=run.llm_cache_path(),
        llm_judge=llm_judge,
    )


def _task(run: Run, n: int) -> str:
    """The task line the round's prompts showed (its plan's), or the planner's setting."""
    plan = run.round(n).read_json(Round.PLAN, {}) if run.round(n).has(Round.PLAN) else {}
    return str(plan.get("task") or run.config.generate.planner.task or "")


def filter_run(
    run: Run,
    round_index: int | None = None,
    config: FilterConfig | None = None,
    llm_judge: LLMJudge | None = None,
    write: bool = True,
    metrics: bool = True,
    context: FilterContext | None = None,
    progress: Callable[[str], None] | None = None,
) -> FilterResult:
    """Filter the stored candidates of one round of a run (default: the latest round with candidates).

    ``config`` defaults to the run config's ``filter`` section. Writing takes the run's lock (a run another
    process works on is refused before anything is written); ``write=False`` only reads.
    ``context`` skips building one from the run (tests, callers that hold the pieces already).
    """
    if round_index is None:
        round_index = run.latest_round(having=Round.CANDIDATES)
        if round_index is None:
            raise FilterInputError(f"{run.path}: no round-NN/{Round.CANDIDATES} found")
    rnd = run.round(round_index)
    config = config or run.config.filter
    chain = FilterChain.from_config(config)  # unknown names or bad settings: before any work
    with run.lock() if write else _nothing():
        candidates = load_candidates(rnd.file(Round.CANDIDATES))
        context = context or context_from_run(run, round_index, llm_judge)
        try:
            previous = run.round(round_index - 1).read_json(Round.FILTER_REPORT, None)
        except RunError as exc:
            log.warning("%s; no collapse check", exc)
            previous = None
        return filter_candidates(
            candidates,
            context,
            config,
            round_index,
            out_dir=rnd.path if write else None,
            metrics=metrics,
            previous_report=previous,
            chain=chain,
            progress=progress,
        )


@contextlib.contextmanager
def _nothing():
    yield
