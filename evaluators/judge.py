"""A second opinion on each candidate's label from an LLM: a multiple-choice question (the intended label and
the round classifier's top rivals, one letter as the answer) asked in batches through any backend and the
run's LLM call cache (:mod:`activesynth.agent.judge`).

Not in the default chain: small local models judge fine-grained intents poorly (measured in
``benchmarks/bench_judge.py``), so name ``llm_judge`` in ``filter.order`` where the judge is worth its cost,
e.g. with a stronger model through ``filter.llm_judge.backend``. Settings: ``filter.llm_judge``.

Verdicts: the judge agrees → keep; the judge is unsure (no usable answer, or another label below
``min_confidence``) → keep, noted; the judge confidently prefers another label → relabel when the round's
classifier also puts that label first, else ``on_disagree`` (drop, review or relabel).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from activesynth.agent.config.judge import JudgeConfig
from activesynth.evaluators.base import Candidate, Decision, Evaluator, FilterContext, Verdict, register

__all__ = ["LLMJudgeCheck"]

log = logging.getLogger(__name__)


@register("llm_judge")
class LLMJudgeCheck(JudgeConfig, Evaluator):
    """Drop, flag or relabel a candidate whose label an LLM judge confidently rejects."""

    def judge(self, candidates: Sequence[Candidate], context: FilterContext) -> list[Decision]:
        from activesynth.agent.judge import JudgeItem, rivals_from_proba

        if not candidates:
            return []
        if context.classifier is None:
            return [self.keep("not_checked: no classifier to name the rival labels")] * len(candidates)
        if self.backend is None and context.generator is None:
            return [self.keep("not_checked: no judge backend and no generator settings")] * len(candidates)
        classes = list(context.classifier.classes_)
        proba = np.asarray(context.classifier.predict_proba([c.text for c in candidates]))
        rivals = rivals_from_proba(proba, classes, [c.label for c in candidates], self.rivals)
        items = [JudgeItem(c.text, c.label, r, c.id) for c, r in zip(candidates, rivals, strict=True)]
        verdicts = self._ask(items, context)
        tops = [classes[int(j)] for j in proba.argmax(axis=1)]  # the classifier's own choice per text
        return [self._decision(v, top) for v, top in zip(verdicts, tops, strict=True)]

    def _ask(self, items, context: FilterContext):
        from activesynth.agent.judge import make_judge

        settings = JudgeConfig.model_validate(self.model_dump())
        examples = context.examples_by_label() if self.examples_per_option else None
        generator = None if self.backend is not None else _backend(context.generator)
        with tempfile.TemporaryDirectory(prefix="activesynth-judge-") as tmp:
            cache = Path(context.llm_cache) if context.llm_cache else Path(tmp) / "llm_cache.sqlite"
            judge = make_judge(
                settings, generator=generator, cache=cache, examples=examples, task=context.task
            )
            try:
                return judge.judge(items)
            finally:
                judge.close()
                if generator is not None and generator is not context.generator:
                    generator.close()

    def _decision(self, v, classifier_top: str | None) -> Decision:
        p = v.p_label
        if v.decision == "agree":
            return self.keep(f"judge_agrees: {v.label}", p)
        if v.decision != "disagree" or v.choice is None:
            why = v.error or (f"prefers {v.choice} below {self.min_confidence}" if v.choice else "no answer")
            return self.keep(f"not_checked: judge unsure ({why})", p)
        detail = f"judge says {v.choice} ({v.confidence:.2f})" if v.confidence is not None else v.choice
        if v.choice == classifier_top or self.on_disagree == "relabel":
            both = " and the classifier agrees" if v.choice == classifier_top else ""
            return Decision(
                self.name, Verdict.KEEP, p, f"relabeled: to {v.choice}, {detail}{both}", relabel=v.choice
            )
        if self.on_disagree == "review":
            return self.review(f"judge_disagrees: {detail}", p)
        return self.drop(f"judge_disagrees: {detail}", p)


def _backend(generator):
    """A backend from the run's generator settings (a config), or the backend object a caller passed."""
    if generator is None or hasattr(generator, "generate"):
        return generator
    from activesynth.agent.llm import make_backend

    return make_backend(generator)
