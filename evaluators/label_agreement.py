"""Does the text read like its intended label? The classifier ensemble decides, an LLM may second it.

A plain "probability of the intended label >= p" check passes a ``receiving_money`` candidate reading "How
can I send money to my friend?" when both labels get moderate probability; so we also require the intended
label's margin over the most confusable other label (``p(label) - max p(other)``) to reach ``min_margin``.

Defaults (min_prob 0.1, min_margin -0.1), measured with the 10-shot BANKING77 head ensemble on 2,000 other
training texts: 87 % of correctly labelled texts kept, 22 % kept when given the classifier's most
confusable wrong label. A probability bar alone at the same recall (min_prob 0.1) keeps 46 % of those.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np

from activesynth.agent.config.filters import LabelAgreementOptions
from activesynth.evaluators.base import Candidate, Decision, Evaluator, FilterContext, Verdict, register

__all__ = ["LabelAgreement", "parse_judge_answer"]

log = logging.getLogger(__name__)


def parse_judge_answer(answer: str, labels: Sequence[str]) -> str | None:
    """The label an LLM answer names: exact (case/space/underscore-insensitive) match of its first line,
    else the only label mentioned in it; None when unclear."""

    def canon(s: str) -> str:
        return re.sub(r"[\s_\-]+", " ", s.strip().strip("\"'`.*:").casefold()).strip()

    lines = [ln for ln in answer.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    by_canon = {canon(lab): lab for lab in labels}
    first = canon(re.sub(r"^(?:label|intent|answer)\s*:\s*", "", lines[0].strip(), flags=re.IGNORECASE))
    if first in by_canon:
        return by_canon[first]
    text = canon(answer)
    hits = [lab for c, lab in by_canon.items() if re.search(rf"(?<!\w){re.escape(c)}(?!\w)", text)]
    return hits[0] if len(hits) == 1 else None


@register("label_agreement")
class LabelAgreement(LabelAgreementOptions, Evaluator):
    """Keep a candidate when the classifier agrees with its intended label, with a margin.

    ``mode="prob"`` needs ``p(label) >= min_prob``; ``mode="rank"`` needs the label among the top
    ``top_k``. Both also need ``p(label) - max p(other) >= min_margin``. With an LLM judge in the context
    (``use_llm_judge``), a candidate on which classifier and judge disagree gets verdict ``review``.
    """

    def scores(self, texts: Sequence[str], labels: Sequence[str], classifier) -> dict[str, np.ndarray]:
        """Per text: probability and rank (1 = top) of its label, margin, and the closest other label."""
        classes = list(classifier.classes_)
        pos = {c: i for i, c in enumerate(classes)}
        unknown = sorted({lab for lab in labels if lab not in pos})
        if unknown:
            raise ValueError(f"labels unknown to the classifier: {', '.join(unknown[:5])}")
        n = len(texts)
        if n == 0:
            empty = np.zeros(0)
            return {"p": empty, "rank": empty.astype(int), "margin": empty, "rival": np.zeros(0, dtype=int)}
        proba = np.asarray(classifier.predict_proba(list(texts)), dtype=np.float64)
        idx = np.array([pos[lab] for lab in labels])
        p = proba[np.arange(n), idx]
        others = proba.copy()
        others[np.arange(n), idx] = -np.inf
        rival = others.argmax(axis=1)
        margin = p - others[np.arange(n), rival]
        rank = 1 + (proba > p[:, None]).sum(axis=1)
        return {"p": p, "rank": rank, "margin": margin, "rival": rival}

    def judge(self, candidates: Sequence[Candidate], context: FilterContext) -> list[Decision]:
        if not candidates:
            return []
        if context.classifier is None:
            raise ValueError("label agreement needs a classifier in the filter context")
        classes = list(context.classifier.classes_)
        s = self.scores([c.text for c in candidates], [c.label for c in candidates], context.classifier)
        llm = context.llm_judge if self.use_llm_judge else None
        labels = list(context.labels) or classes
        active = context.is_active(len(candidates))
        out = []
        for i, cand in enumerate(candidates):
            p, rank, margin = float(s["p"][i]), int(s["rank"][i]), float(s["margin"][i])
            rival = classes[int(s["rival"][i])]
            detail = f"p({cand.label})={p:.2f}, rank {rank}, margin {margin:+.2f} over {rival}"
            if self.mode == "prob" and p < self.min_prob:
                ok, code = False, f"low_probability: {detail} (< {self.min_prob:.2f})"
            elif self.mode == "rank" and rank > self.top_k:
                ok, code = False, f"low_rank: {detail} (rank > {self.top_k})"
            elif margin < self.min_margin:
                ok, code = False, f"confusable: {detail} (margin < {self.min_margin:+.2f})"
            else:
                ok, code = True, f"agrees: {detail}"
            verdict = Verdict.KEEP if ok else Verdict.DROP
            reason = code
            if llm is not None:
                if not active[i]:
                    reason += "; llm judge skipped: already dropped"
                else:
                    verdict, reason = self._second_opinion(llm, cand, labels, ok, code)
            out.append(Decision(self.name, verdict, margin, reason))
        return out

    @staticmethod
    def _second_opinion(
        llm, cand: Candidate, labels: list[str], ok: bool, reason: str
    ) -> tuple[Verdict, str]:
        first = Verdict.KEEP if ok else Verdict.DROP
        try:
            answer = llm(cand.text, cand.label, labels)
        except Exception as exc:  # a judge failure must not lose the candidate's record
            log.warning("llm judge failed on candidate %s: %s", cand.id, exc)
            return first, f"{reason}; llm judge failed ({type(exc).__name__})"
        said = parse_judge_answer(answer or "", labels)
        if said is None:
            return first, f"{reason}; llm judge answer unclear"
        llm_ok = said == cand.label
        if llm_ok == ok:
            return first, f"{reason}; llm judge agrees ({said})"
        code = "llm_disagrees" if ok else "llm_overrules"
        return Verdict.REVIEW, f"{code}: classifier and llm judge ({said}) differ; {reason}"
