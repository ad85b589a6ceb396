"""Run evaluators in order over a batch of candidates and summarise why candidates were dropped."""

from __future__ import annotations

import importlib
import logging
import pkgutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from activesynth.agent.config import FilterConfig, describe
from activesynth.agent.progress import Ticker
from activesynth.evaluators.base import Candidate, Decision, Evaluator, FilterContext, Verdict, registry

__all__ = ["CandidateResult", "FilterChain", "FilterOutcome", "discover", "filter_report"]

log = logging.getLogger(__name__)

_HELPERS = {"base", "chain", "vectors"}  # modules of this package that define no evaluator
UNUSABLE = "parser"


def discover() -> dict[str, type[Evaluator]]:
    """Import every evaluator module of this package (sub-packages such as ``metrics`` hold none), so that
    each registers itself; returns the registry."""
    import activesynth.evaluators as package

    for info in pkgutil.iter_modules(package.__path__):
        if not info.ispkg and info.name not in _HELPERS and not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")
    return registry


@dataclass
class CandidateResult:
    """A candidate, every decision on it, and whether it is accepted."""

    candidate: Candidate
    decisions: list[Decision]
    accepted: bool

    @property
    def first_drop(self) -> Decision | None:
        return next((d for d in self.decisions if d.verdict == Verdict.DROP), None)

    @property
    def flagged(self) -> bool:
        return any(d.verdict == Verdict.REVIEW for d in self.decisions)

    def to_dict(self) -> dict[str, Any]:
        """The decisions.jsonl record."""
        return {
            "id": self.candidate.id,
            "accepted": self.accepted,
            "decisions": [d.to_dict() for d in self.decisions],
        }

    def accepted_record(self) -> dict[str, Any]:
        """The candidate record for accepted.jsonl, with the text as the chain left it (e.g. scrubbed)."""
        record = dict(self.candidate.record)
        record["text"] = self.candidate.text
        record["label"] = self.candidate.label
        if self.flagged:
            record["review"] = True
        return record


@dataclass
class FilterOutcome:
    results: list[CandidateResult]
    order: list[str]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def accepted(self) -> list[CandidateResult]:
        return [r for r in self.results if r.accepted]


class FilterChain:
    """Evaluators in order; every evaluator judges every usable candidate."""

    def __init__(self, evaluators: Sequence[Evaluator], accept_review: bool = True) -> None:
        self.evaluators = list(evaluators)
        self.accept_review = accept_review

    @classmethod
    def from_config(cls, config: FilterConfig) -> FilterChain:
        """Build from a run's ``filter:`` settings; an unknown evaluator name or a bad plug-in setting is a
        ``ValueError`` of one line."""
        found = discover()
        unknown = [n for n in [*config.order, *config.plugins] if n not in found]
        if unknown:
            raise ValueError(f"unknown evaluator(s) {unknown}; known: {sorted(found)}")
        evals = []
        for name in config.order:
            try:
                evals.append(found[name].model_validate(config.settings_for(name)))
            except ValidationError as e:
                raise ValueError(f"filter.{name}: {describe(e)}") from None
        return cls(evals, accept_review=config.accept_review)

    @property
    def order(self) -> list[str]:
        return [e.name for e in self.evaluators]

    def run(
        self,
        candidates: Sequence[Candidate],
        context: FilterContext,
        progress: Callable[[str], None] | None = None,
    ) -> FilterOutcome:
        """Judge ``candidates``; unusable ones (status != "parsed") get one ``parser`` drop decision only.

        ``progress`` gets a line as evaluators finish (at most every 10 s, and always the first and the last),
        with the evaluators done, the candidates still in and an ETA (see :class:`Ticker`).
        """
        usable = [i for i, c in enumerate(candidates) if c.status == "parsed"]
        work = [replace(candidates[i]) for i in usable]
        decisions: list[list[Decision]] = [[] for _ in work]
        active = [True] * len(work)
        seconds: dict[str, float] = {}
        ticker = Ticker(
            len(self.evaluators), f"filtering {len(work)} candidates", progress or _quiet, unit="evaluators"
        )
        for ev in self.evaluators:
            t0 = time.perf_counter()
            ctx = replace(context, active=list(active))
            got = ev.judge(work, ctx)
            if len(got) != len(work):
                raise RuntimeError(
                    f"evaluator {ev.name} returned {len(got)} decisions for {len(work)} candidates"
                )
            for i, d in enumerate(got):
                decisions[i].append(d)
                if d.verdict == Verdict.DROP:
                    active[i] = False
                if d.rewrite is not None:
                    work[i].text = d.rewrite
                if d.relabel is not None and d.verdict != Verdict.DROP:
                    first = work[i].record.get("relabeled_from", work[i].label)
                    work[i].record = {**work[i].record, "relabeled_from": first}  # the input stays as it was
                    work[i].label = d.relabel
            seconds[ev.name] = round(time.perf_counter() - t0, 3)
            log.info("%s: %d of %d dropped so far", ev.name, active.count(False), len(work))
            ticker.tick(note=f"{ev.name} done · {active.count(True)} still in")
        by_index = dict(zip(usable, range(len(work)), strict=True))
        results = []
        for i, cand in enumerate(candidates):
            if i not in by_index:
                why = cand.record.get("reason") or "unusable"
                dec = Decision(UNUSABLE, Verdict.DROP, None, f"unusable: {why}")
                results.append(CandidateResult(cand, [dec], False))
                continue
            j = by_index[i]
            verdicts = {d.verdict for d in decisions[j]}
            ok = Verdict.DROP not in verdicts and (self.accept_review or Verdict.REVIEW not in verdicts)
            results.append(CandidateResult(work[j], decisions[j], ok))
        ticker.done(f"{sum(r.accepted for r in results)} accepted")
        return FilterOutcome(results, self.order, seconds)


def filter_report(
    outcome: FilterOutcome,
    round_index: int | None = None,
    examples: int = 5,
    config: dict[str, Any] | None = None,
    withheld_codes: Sequence[str] = ("near_test",),
) -> dict[str, Any]:
    """Counts per evaluator, verdict and reason code, with up to ``examples`` candidates per reason.

    ``first_drops`` attributes each dropped candidate to the first evaluator (in chain order) that dropped
    it, so its counts add up to the number dropped. Texts of candidates with a ``withheld_codes`` decision
    (closeness to test texts) are never shown, under any reason.
    """
    results = outcome.results
    n_accepted = sum(r.accepted for r in results)
    groups: dict[tuple[str, str, str], list[tuple[CandidateResult, Decision]]] = defaultdict(list)
    by_eval: dict[str, Counter] = defaultdict(Counter)
    first: Counter = Counter()
    per_label: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        per_label[r.candidate.label]["candidates"] += 1
        per_label[r.candidate.label]["accepted"] += int(r.accepted)
        for d in r.decisions:
            by_eval[d.evaluator][str(d.verdict)] += 1
            groups[(d.evaluator, str(d.verdict), d.code)].append((r, d))
        fd = r.first_drop
        if fd is not None:
            first[f"{fd.evaluator}/{fd.code}"] += 1
    withheld = {id(r) for r in results if any(d.code in withheld_codes for d in r.decisions)}
    reasons = []
    for (ev, verdict, code), items in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        shown = []
        for r, d in items[:examples]:
            text = "[withheld: near a held-out test text]" if id(r) in withheld else r.candidate.text
            shown.append({"id": r.candidate.id, "label": r.candidate.label, "text": text, "reason": d.reason})
        reasons.append(
            {"evaluator": ev, "verdict": verdict, "code": code, "count": len(items), "examples": shown}
        )
    return {
        "schema_version": 1,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "round": round_index,
        "order": outcome.order,
        "n_candidates": len(results),
        "n_accepted": n_accepted,
        "n_dropped": len(results) - n_accepted,
        "n_review": sum(r.flagged for r in results),
        "by_evaluator": {k: dict(v) for k, v in by_eval.items()},
        "first_drops": dict(first.most_common()),
        "reasons": reasons,
        "per_label": {k: dict(v) for k, v in sorted(per_label.items())},
        "seconds": outcome.seconds,
        "config": config,
    }


def _quiet(line: str) -> None:
    pass
