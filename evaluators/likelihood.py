"""The generator's own verdict on a label: a candidate must be likelier under the few-shot context of its
intended label than under its rivals' (:mod:`activesynth.agent.verify`; the contexts' prefixes are evaluated
once per label, so a check costs only the candidate's own tokens per label compared).

Costly (about a second per candidate with Gemma-3-270M on 2 cores, two rivals), so not in the default chain;
name ``likelihood`` in ``filter.order`` to use it. Settings: ``filter.likelihood``.
"""

from __future__ import annotations

from collections.abc import Sequence

from activesynth.agent.config.verify import VerifierConfig
from activesynth.evaluators.base import Candidate, Decision, Evaluator, FilterContext, Verdict, register

__all__ = ["LikelihoodCheck"]


@register("likelihood")
class LikelihoodCheck(VerifierConfig, Evaluator):
    """Drop (or flag, or relabel) a candidate its generator finds likelier under a rival label's context."""

    def judge(self, candidates: Sequence[Candidate], context: FilterContext) -> list[Decision]:
        from activesynth.agent.verify import LikelihoodVerifier, VerifyItem

        if not candidates:
            return []
        if context.classifier is None or not context.labelled[0]:
            return [self.keep("not_checked: no classifier or labelled real texts")] * len(candidates)
        rivals = context.rivals([c.text for c in candidates], [c.label for c in candidates], self.rivals)
        items = [VerifyItem(c.text, c.label, r, c.id) for c, r in zip(candidates, rivals, strict=True)]
        settings = VerifierConfig.model_validate(self.model_dump())
        task = context.task or "Short texts, each labelled with its category"
        with LikelihoodVerifier(
            settings, examples=context.examples_by_label(), task=task, generator=context.generator
        ) as verifier:
            found = verifier.verify(items)
        return [self._decision(v) for v in found]

    def _decision(self, v) -> Decision:
        score = v.ratio
        why = v.reason or (f"ratio {v.ratio:+.3f} vs {v.best_rival}" if v.ratio is not None else "")
        if v.decision == "drop":
            return self.drop(f"unlikely_label: {why}", score)
        if v.decision == "review":
            return self.review(f"unlikely_label: {why}", score)
        if v.decision == "relabel" and v.relabel:
            return Decision(
                self.name, Verdict.KEEP, score, f"relabeled: to {v.relabel}, {why}", relabel=v.relabel
            )
        if v.decision == "unchecked":
            return self.keep(f"not_checked: {why}", score)
        return self.keep(f"likely_label: {why}", score)
