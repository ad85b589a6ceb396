"""``FilterConfig``: which evaluators run, in which order, with which thresholds."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from activesynth.evaluators.dedup import EmbeddingDedup
from activesynth.evaluators.label_agreement import LabelAgreement
from activesynth.evaluators.leakage import LeakageGuard
from activesynth.evaluators.pii_filter import PIIFilter
from activesynth.evaluators.quality import QualityRules
from activesynth.evaluators.rouge import RougeLFilter

__all__ = ["BUILTIN_FIELDS", "DEFAULT_ORDER", "FilterConfig"]

DEFAULT_ORDER = ["quality", "pii", "leakage", "label_agreement", "rouge_l", "embedding_dedup"]
BUILTIN_FIELDS = tuple(DEFAULT_ORDER)


class FilterConfig(BaseModel):
    """Order and thresholds of the filter chain (the ``filter:`` section of a run's config)."""

    model_config = ConfigDict(extra="forbid")

    order: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ORDER),
        description="Evaluator names in the order they run. Every candidate is judged by all of them; "
        "greedy dedup filters (rouge_l, embedding_dedup) come last so only survivors join their "
        "reference sets.",
    )
    quality: QualityRules.Options = Field(
        default_factory=QualityRules.Options, description="Rule checks: length, meta replies, copies, script."
    )
    pii: PIIFilter.Options = Field(default_factory=PIIFilter.Options, description="Personal-data filter.")
    leakage: LeakageGuard.Options = Field(
        default_factory=LeakageGuard.Options, description="Distance limits to held-out test texts."
    )
    label_agreement: LabelAgreement.Options = Field(
        default_factory=LabelAgreement.Options, description="Classifier (and optional LLM) label check."
    )
    rouge_l: RougeLFilter.Options = Field(
        default_factory=RougeLFilter.Options, description="Self-Instruct ROUGE-L novelty rule."
    )
    embedding_dedup: EmbeddingDedup.Options = Field(
        default_factory=EmbeddingDedup.Options, description="Cosine near-duplicate filter."
    )
    plugins: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Options of evaluators that are not built in, by name (validated by their Options).",
    )
    accept_review: bool = Field(
        True,
        description="Accept candidates whose worst verdict is 'review' (they stay flagged).",
    )
    report_examples: int = Field(5, ge=0, description="Examples per reason in filter_report.json.")

    @field_validator("order")
    @classmethod
    def _unique(cls, order: list[str]) -> list[str]:
        if len(set(order)) != len(order):
            raise ValueError("order names an evaluator twice")
        return order

    @model_validator(mode="after")
    def _known(self) -> FilterConfig:
        from activesynth.evaluators.base import registry
        from activesynth.evaluators.chain import discover

        discover()
        unknown = [n for n in self.order if n not in registry]
        if unknown:
            raise ValueError(f"unknown evaluator(s) {unknown}; known: {sorted(registry)}")
        for name, opts in self.plugins.items():
            if name not in registry:
                raise ValueError(f"plugins names unknown evaluator {name!r}")
            if name in BUILTIN_FIELDS:
                raise ValueError(f"set {name!r} options in its own field, not under plugins")
            registry[name].Options.model_validate(opts)
        return self

    def options_for(self, name: str) -> BaseModel | dict[str, Any]:
        """The options of one evaluator."""
        if name in BUILTIN_FIELDS:
            return getattr(self, name)
        return self.plugins.get(name, {})

    def with_overrides(self, **values: Any) -> FilterConfig:
        """A copy with dotted overrides (``**{"rouge_l.max_f": 0.8}``); None values are skipped."""
        data = self.model_dump()
        for key, value in values.items():
            if value is None:
                continue
            section, _, field = key.partition(".")
            if field:
                data.setdefault(section, {})[field] = value
            else:
                data[section] = value
        return FilterConfig.model_validate(data)
