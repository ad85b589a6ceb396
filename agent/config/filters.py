"""Settings of the filter chain (``filter:`` in a run's config): which evaluators run, in which order, and
each built-in evaluator's settings. An evaluator *is* its settings: ``RougeLFilter`` subclasses
:class:`RougeLOptions`, so ``RougeLFilter(max_f=0.8)`` and
``RougeLFilter(**config.filter.rouge_l.model_dump())`` build the same filter; each default is declared once,
here."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from activesynth.agent.config.base import StrictModel
from activesynth.agent.config.judge import JudgeConfig
from activesynth.agent.config.verify import VerifierConfig

__all__ = [
    "BUILTIN_FILTERS",
    "DEFAULT_ORDER",
    "EmbeddingDedupOptions",
    "FilterConfig",
    "LabelAgreementOptions",
    "LabelNeighborsOptions",
    "LeakageOptions",
    "PIIOptions",
    "QualityOptions",
    "RougeLOptions",
]

# The label check by default is the rival-prototype one (label_neighbors): on the generator-quality
# simulator (benchmarks/simulate, README) the classifier's agreement (label_agreement) dropped the informative
# right texts and cost about a point at 300 texts, while label_neighbors caught the same wrong ones.
# label_agreement stays available (and takes an LLM judge), and so does the generator's likelihood check.
DEFAULT_ORDER = ["quality", "pii", "leakage", "label_neighbors", "rouge_l", "embedding_dedup"]
BUILTIN_FILTERS = (*DEFAULT_ORDER, "label_agreement", "likelihood", "llm_judge")


class QualityOptions(StrictModel):
    """Rule checks: length, meta replies, refusals, template tokens, script, repetition, copies."""

    min_chars: int = Field(8, ge=0, description="Fewest characters (after stripping).")
    max_chars: int = Field(300, ge=1, description="Most characters.")
    min_words: int = Field(2, ge=0, description="Fewest words.")
    max_words: int = Field(60, ge=1, description="Most words.")
    language: str = Field(
        "en", description="Dataset language; 'en' enables the Latin-script and stop-word language checks."
    )
    min_latin_share: float = Field(0.9, ge=0, le=1, description="Least share of Latin letters (English).")
    max_token_share: float = Field(
        0.5, gt=0, le=1, description="Most share of one non-stop word in a text of 6+ words (repetition)."
    )
    check_copies: bool = Field(
        True, description="Drop copies of the source text, a few-shot/real text or a prompt line."
    )


class PIIOptions(StrictModel):
    """Personal data in generated texts."""

    mode: Literal["drop", "scrub"] = Field(
        "drop", description="drop: reject texts with personal data; scrub: keep them with placeholders."
    )


class LeakageOptions(StrictModel):
    """Distance limits to the held-out test texts."""

    max_rouge: float = Field(0.7, ge=0, le=1, description="Drop when ROUGE-L F to a test text exceeds this.")
    max_cosine: float = Field(0.9, ge=-1, le=1, description="Drop when cosine to a test text exceeds this.")
    use_embeddings: bool = Field(True, description="Also check cosine (needs an embedder).")


class LabelAgreementOptions(StrictModel):
    """The classifier's (and an optional LLM judge's) agreement with a candidate's intended label."""

    mode: Literal["prob", "rank"] = Field(
        "prob", description="prob: need p(label) >= min_prob; rank: need label in the top_k."
    )
    min_prob: float = Field(0.1, ge=0, le=1, description="Least ensemble probability of the intended label.")
    top_k: int = Field(3, ge=1, description="Worst allowed rank of the intended label (mode rank).")
    min_margin: float = Field(
        -0.1,
        ge=-1,
        le=1,
        description="Least p(label) - max p(other label); 0 means it must be the top label.",
    )
    use_llm_judge: bool = Field(True, description="Ask the context's LLM judge too, when one is given.")


class LabelNeighborsOptions(StrictModel):
    """The rival-prototype check: a candidate must sit nearer the real texts of its intended label than those
    of the label's rivals, about as much as real texts of that label do (the threshold is calibrated on the
    real texts themselves, leave-one-out)."""

    k: int = Field(3, ge=1, description="Nearest real texts of a class whose mean cosine scores the class.")
    rivals: int = Field(3, ge=1, description="Rival classes compared: the classifier's top others.")
    quantile: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Drop below this quantile of the real texts' own margins (0.05: about 1 real text in 20 "
        "would be dropped).",
    )
    verdict: Literal["drop", "review", "relabel"] = Field(
        "drop",
        description="A text near a rival label is dropped, flagged for review, or (relabel) given the "
        "rival's label when the classifier's top prediction is that rival too (else dropped).",
    )


class RougeLOptions(StrictModel):
    """Self-Instruct's novelty rule."""

    max_f: float = Field(0.7, ge=0, le=1, description="Drop when the highest ROUGE-L F exceeds this.")
    workers: int = Field(1, description="rapidfuzz threads (-1: all cores).")
    block: int = Field(512, ge=1, description="Candidates scored per rapidfuzz call.")


class EmbeddingDedupOptions(StrictModel):
    """Cosine near-duplicates among real, accepted and new texts."""

    max_cosine: float = Field(0.95, ge=-1, le=1, description="Drop when the highest cosine exceeds this.")
    block: int = Field(1024, ge=1, description="Candidates searched per FAISS call.")


class FilterConfig(StrictModel):
    """Order and settings of the filter chain (the ``filter:`` section of a run's config).

    Names in ``order`` and ``plugins`` are checked against the evaluator registry when the chain is built
    (``activesynth.evaluators.chain.FilterChain.from_config``), which the loop and the ``filter`` command do
    before any work."""

    order: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ORDER),
        description="Evaluator names in the order they run. Every candidate is judged by all of them; "
        "greedy dedup filters (rouge_l, embedding_dedup) come last so only survivors join their "
        "reference sets.",
    )
    quality: QualityOptions = Field(default_factory=QualityOptions, description=QualityOptions.__doc__)
    pii: PIIOptions = Field(default_factory=PIIOptions, description=PIIOptions.__doc__)
    leakage: LeakageOptions = Field(default_factory=LeakageOptions, description=LeakageOptions.__doc__)
    label_agreement: LabelAgreementOptions = Field(
        default_factory=LabelAgreementOptions, description=LabelAgreementOptions.__doc__
    )
    label_neighbors: LabelNeighborsOptions = Field(
        default_factory=LabelNeighborsOptions, description=LabelNeighborsOptions.__doc__
    )
    likelihood: VerifierConfig = Field(
        default_factory=VerifierConfig,
        description="The generator's own likelihood check (name 'likelihood' in the order to use it; "
        "about a second per candidate with Gemma-270M on 2 cores).",
    )
    llm_judge: JudgeConfig = Field(
        default_factory=JudgeConfig,
        description="An LLM's multiple-choice verdict on each label (name 'llm_judge' in the order to use "
        "it; its backend defaults to the generator's).",
    )
    rouge_l: RougeLOptions = Field(default_factory=RougeLOptions, description=RougeLOptions.__doc__)
    embedding_dedup: EmbeddingDedupOptions = Field(
        default_factory=EmbeddingDedupOptions, description=EmbeddingDedupOptions.__doc__
    )
    plugins: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Settings of evaluators that are not built in, by name (validated by the evaluator).",
    )
    leakage_guard: bool = Field(
        True,
        description="Candidates must pass the leakage guard (no near-copy of a held-out test text): an order "
        "without 'leakage' is refused unless this is false (--no-leakage-guard).",
    )
    accept_review: bool = Field(
        True, description="Accept candidates whose worst verdict is 'review' (they stay flagged)."
    )
    report_examples: int = Field(5, ge=0, description="Examples per reason in filter_report.json.")

    @field_validator("order")
    @classmethod
    def _unique(cls, order: list[str]) -> list[str]:
        if len(set(order)) != len(order):
            raise ValueError("order names an evaluator twice")
        return order

    @model_validator(mode="after")
    def _guarded(self) -> FilterConfig:
        if self.leakage_guard and "leakage" not in self.order:
            raise ValueError(
                "order leaves out the leakage guard ('leakage'): add it, or switch the guard off knowingly "
                "with filter.leakage_guard=false (--no-leakage-guard)"
            )
        return self

    @field_validator("plugins")
    @classmethod
    def _not_builtin(cls, plugins: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name in plugins:
            if name in BUILTIN_FILTERS:
                raise ValueError(f"set {name!r} settings in its own section, not under plugins")
        return plugins

    def settings_for(self, name: str) -> dict[str, Any]:
        """The settings of one evaluator as keyword arguments."""
        if name in BUILTIN_FILTERS:
            return getattr(self, name).model_dump()
        return dict(self.plugins.get(name, {}))
