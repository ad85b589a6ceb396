"""Filter a round's candidates: run the evaluator chain, write decisions, accepted texts and a report.

Reads ``round-NN/candidates.jsonl``; writes ``round-NN/decisions.jsonl`` (every candidate with every
decision), ``round-NN/accepted.jsonl`` (accepted candidate records) and ``round-NN/filter_report.json``.
No LLM is called unless the caller passes an ``llm_judge``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from activesynth.agent.files import write_json, write_jsonl
from activesynth.evaluators.base import Candidate, FilterContext, LLMJudge
from activesynth.evaluators.chain import FilterChain, FilterOutcome, filter_report
from activesynth.evaluators.config import FilterConfig

__all__ = [
    "FilterInputError",
    "FilterResult",
    "context_from_run",
    "filter_candidates",
    "filter_run",
    "load_candidates",
    "previous_accepted_texts",
    "read_jsonl",
    "round_dir",
]

log = logging.getLogger(__name__)


class FilterInputError(ValueError):
    """Bad filter input: a missing file or a malformed line (the message names file and line)."""


def round_dir(run_path: Path, n: int) -> Path:
    """``<run>/round-NN``."""
    return Path(run_path) / f"round-{n:02d}"


def _rounds(run_path: Path) -> list[int]:
    out = []
    for p in Path(run_path).glob("round-*"):
        suffix = p.name.removeprefix("round-")
        if p.is_dir() and suffix.isdigit():
            out.append(int(suffix))
    return sorted(out)


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; FilterInputError on a missing file or bad line."""
    path = Path(path)
    if not path.is_file():
        raise FilterInputError(f"{path}: file not found")
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FilterInputError(
                    f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})"
                ) from None
            if not isinstance(obj, dict):
                raise FilterInputError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def load_candidates(path: Path) -> list[Candidate]:
    """Candidates from a candidates.jsonl file; duplicate ids and missing fields are errors."""
    out: list[Candidate] = []
    seen: dict[str, int] = {}
    for lineno, obj in read_jsonl(path):
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


def previous_accepted_texts(run_path: Path, before_round: int) -> list[str]:
    """Texts accepted in rounds before ``before_round`` (in round order)."""
    texts: list[str] = []
    for n in _rounds(run_path):
        path = round_dir(run_path, n) / "accepted.jsonl"
        if n < before_round and path.is_file():
            texts.extend(str(obj.get("text", "")) for _, obj in read_jsonl(path))
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
) -> FilterResult:
    """Run the chain; with ``out_dir`` write decisions.jsonl, accepted.jsonl and filter_report.json there.

    With ``metrics`` (and an embedder in the context) the report gets ``accepted_metrics`` of the accepted
    set, including a collapse warning against ``previous_report``'s.
    """
    config = config or FilterConfig()
    outcome = FilterChain.from_config(config).run(candidates, context)
    report = filter_report(
        outcome, round_index, examples=config.report_examples, config=config.model_dump(mode="json")
    )
    if metrics and context.embedder is not None:
        from activesynth.evaluators.synthetic_metrics import accepted_set_metrics

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
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_jsonl(out_dir / "decisions.jsonl", (r.to_dict() for r in outcome.results))
        write_jsonl(out_dir / "accepted.jsonl", (r.accepted_record() for r in outcome.accepted))
        write_json(out_dir / "filter_report.json", report)
        log.info("filter: %d of %d accepted -> %s", report["n_accepted"], report["n_candidates"], out_dir)
    return FilterResult(outcome, report, out_dir)


def _round_prompts(rdir: Path) -> tuple[dict[str, str], list[str]]:
    """Prompts by ``prompt_id`` and the few-shot examples they showed, from ``prompts.jsonl``."""
    prompts: dict[str, str] = {}
    examples: list[str] = []
    path = rdir / "prompts.jsonl"
    if path.is_file():
        for _, rec in read_jsonl(path):
            if rec.get("prompt_id") and isinstance(rec.get("text"), str):
                prompts[rec["prompt_id"]] = rec["text"]
            examples.extend(e for e in rec.get("examples") or [] if isinstance(e, str))
    return prompts, examples


def context_from_run(run, n: int, llm_judge: LLMJudge | None = None) -> FilterContext:
    """A filter context from an ``agent.runs.Run``: train texts, earlier accepted texts, the round's
    classifier, the run's embedder, the round's prompts and few-shot examples, and the sealed test split."""
    dataset = run.load_dataset()
    embedder = run.embedder()
    prompts, few_shot = _round_prompts(round_dir(run.path, n))
    return FilterContext(
        labels=list(dataset.labels),
        real_texts=list(dataset.train.texts),
        accepted_texts=previous_accepted_texts(run.path, n),
        embedder=embedder,
        classifier=run.load_classifier(n, embedder),
        test=dataset.test,
        prompts=prompts,
        few_shot_texts=few_shot,
        llm_judge=llm_judge,
    )


def _run_filter_config(run) -> FilterConfig:
    cfg = getattr(run.config, "filter", None)
    if isinstance(cfg, FilterConfig):
        return cfg
    if isinstance(cfg, dict):
        return FilterConfig.model_validate(cfg)
    return FilterConfig()


def filter_run(
    run_path: Path,
    round_index: int | None = None,
    config: FilterConfig | None = None,
    overrides: dict[str, Any] | None = None,
    llm_judge: LLMJudge | None = None,
    write: bool = True,
    metrics: bool = True,
    context: FilterContext | None = None,
) -> FilterResult:
    """Filter the stored candidates of one round of a run (default: the latest round with candidates).

    ``config`` defaults to the run config's ``filter`` section (or the defaults); ``overrides`` are dotted
    FilterConfig keys (``{"rouge_l.max_f": 0.8}``) applied on top.
    ``context`` skips building one from the run (tests, callers that hold the pieces already).
    """
    run_path = Path(run_path)
    if not run_path.is_dir():
        raise FilterInputError(f"{run_path}: run folder not found")
    if round_index is None:
        with_cands = [n for n in _rounds(run_path) if (round_dir(run_path, n) / "candidates.jsonl").is_file()]
        if not with_cands:
            raise FilterInputError(f"{run_path}: no round-NN/candidates.jsonl found")
        round_index = with_cands[-1]
    rdir = round_dir(run_path, round_index)
    candidates = load_candidates(rdir / "candidates.jsonl")
    run = None
    if context is None:
        from activesynth.agent.runs import Run

        run = Run.open(run_path)
        context = context_from_run(run, round_index, llm_judge)
    if config is None:
        config = _run_filter_config(run) if run is not None else FilterConfig()
    if overrides:
        config = config.with_overrides(**overrides)
    previous = None
    prev_path = round_dir(run_path, round_index - 1) / "filter_report.json"
    if prev_path.is_file():
        try:
            previous = json.loads(prev_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            log.warning("%s: unreadable (%s); no collapse check", prev_path, exc.msg)
    return filter_candidates(
        candidates,
        context,
        config,
        round_index,
        out_dir=rdir if write else None,
        metrics=metrics,
        previous_report=previous,
    )
