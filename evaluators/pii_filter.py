"""Drop (or scrub) generated texts that contain personal data, using ``agent.pii.PIIScrubber``."""

from __future__ import annotations

from collections.abc import Sequence

from activesynth.agent.config.filters import PIIOptions
from activesynth.evaluators.base import Candidate, Decision, Evaluator, FilterContext, Verdict, register

__all__ = ["PIIFilter"]


@register("pii")
class PIIFilter(PIIOptions, Evaluator):
    """``mode="drop"`` drops texts with emails, URLs, IBANs, card or phone numbers; ``"scrub"`` keeps them
    with the items replaced by typed placeholders (``[EMAIL]``), the form real texts already have."""

    def judge(self, candidates: Sequence[Candidate], context: FilterContext) -> list[Decision]:
        from activesynth.agent.pii import PIIScrubber

        scrubber = PIIScrubber()
        out = []
        for cand in candidates:
            result = scrubber.scrub(cand.text)
            if not result.counts:
                out.append(self.keep("clean: no personal data found", 0.0))
                continue
            found = ", ".join(f"{n} {kind}" for kind, n in sorted(result.counts.items()))
            total = float(sum(result.counts.values()))
            if self.mode == "drop":
                out.append(self.drop(f"personal_data: {found}", total))
            else:
                out.append(
                    Decision(self.name, Verdict.KEEP, total, f"scrubbed: {found}", rewrite=result.text)
                )
        return out
