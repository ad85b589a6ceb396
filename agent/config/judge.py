"""Settings of the LLM label judge (:mod:`activesynth.agent.judge`): a multiple-choice question per candidate
text (its intended label and the classifier's top rivals, one letter as the answer), asked in batches through
any backend and the LLM call cache.

In a run, the ``filter.llm_judge`` section: name ``llm_judge`` in ``filter.order`` to ask the judge about
every candidate that reaches it (``activesynth.evaluators.judge``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from activesynth.agent.config.base import StrictModel
from activesynth.agent.config.llm import BackendConfig

__all__ = ["JudgeConfig"]


class JudgeConfig(StrictModel):
    """How the LLM judge asks and what its answers mean."""

    backend: BackendConfig | None = Field(
        None,
        description="The judge's own backend (local, openai or vllm settings); None: the generator's backend "
        "and model.",
    )
    style: Literal["auto", "chat", "completion"] = Field(
        "auto",
        description="chat asks an instruction model (template judge_choice), completion a base model "
        "(judge_choice_completion); auto: completion for a local model without a chat template, else chat.",
    )
    template: str | None = Field(
        None,
        description="A template to use instead of the style's (name, name@sha12 or a .jinja2 path); it gets "
        "the variables task, text, options, examples and letters.",
    )
    rivals: int = Field(
        4,
        ge=1,
        le=25,
        description="Rival labels shown besides the intended one (the classifier's top others, given by the "
        "caller; extra ones are cut). Options are lettered A, B, C, ...",
    )
    examples_per_option: int = Field(
        0,
        ge=0,
        le=10,
        description="Real example texts shown under each option (from the examples the caller passes, e.g. "
        "the few-shot training texts); 0 shows label names only.",
    )
    example_chars: int = Field(160, ge=20, description="Example texts are cut to this many characters.")
    text_chars: int = Field(500, ge=20, description="The judged text is cut to this many characters.")
    option_order: Literal["mixed", "alphabetical"] = Field(
        "mixed",
        description="mixed: a fixed pseudo-random order per set of options, so the intended label's letter "
        "says nothing about whether it is right, and texts with the same options share a prompt prefix; "
        "alphabetical: by label name.",
    )
    temperature: float = Field(
        0.0, ge=0.0, le=2.0, description="Sampling temperature of the answer; 0 takes the likeliest letter."
    )
    max_tokens: int = Field(
        1,
        ge=1,
        le=32,
        description="Tokens of the answer; 1 suffices where the backend constrains it to a letter (local "
        "llama.cpp, servers with guided choice or a grammar); more lets an unconstrained model say 'A)'.",
    )
    min_confidence: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Probability (among the options) the judge must give another label to overrule the "
        "intended one; below it a disagreement counts as unsure. Without log-probabilities from the backend "
        "a disagreement overrules only when this is 0.",
    )
    calibrate: Literal["none", "batch"] = Field(
        "none",
        description="batch: divide each letter's probability by its mean over the texts of one judge call "
        "before choosing (removes a small model's preference for a letter, e.g. always A, at no extra call); "
        "needs log-probabilities and at least calibrate_min answered texts.",
    )
    calibrate_min: int = Field(
        20, ge=2, description="Fewest answered texts in one judge call for batch calibration to apply."
    )
    batch_size: int = Field(
        64, ge=1, description="Texts per backend call (all of a batch's requests go in one generate call)."
    )
    on_disagree: Literal["drop", "review", "relabel"] = Field(
        "drop",
        description="What a confident disagreement does to a candidate in the filter chain: drop it, flag it "
        "for review, or give it the judge's label. Whatever this says, a candidate is relabelled when the "
        "judge and the round's classifier agree on the same other label.",
    )
    seed: int = Field(0, description="Seed of the mixed option order and of sampling.")
