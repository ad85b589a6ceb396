"""Settings of planning and generation (``generate:`` in a run's config): the planner, the backend, sampling.

Template families and Evol-Instruct methods are named here because the planner's settings refer to them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from activesynth.agent.config.base import StrictModel
from activesynth.agent.config.llm import BackendConfig, LocalConfig, PriceTable, SamplingParams

__all__ = ["EVOL_METHODS", "FAMILY_TEMPLATES", "GenerateConfig", "PlannerConfig"]

FAMILY_TEMPLATES: dict[str, dict[str, str]] = {
    "completion": {
        "list": "self_instruct_list",
        "contrastive": "contrastive_pair_list",
        "evol_depth": "evol_in_depth_list",
        "evol_breadth": "self_instruct_list",
    },
    "chat": {
        "list": "self_instruct_chat",
        "contrastive": "contrastive_pair",
        "evol_depth": "evol_in_depth",
        "evol_breadth": "evol_in_breadth",
    },
}

EVOL_METHODS: dict[str, str] = {
    "constraints": "adds one realistic constraint or condition (a deadline, an amount, a place)",
    "deepen": "asks about the same need in more depth, with a reason or a follow-up worry",
    "concretize": "replaces general words with concrete, specific details",
    "indirect": "says the same thing indirectly, without the obvious keywords",
    "complicate": "is written the way a hurried person types: longer, with an aside and a small typo",
}


class PlannerConfig(StrictModel):
    """How the planner spends the texts asked of the generator in one round."""

    n_texts: int = Field(
        200,
        ge=0,
        description="Texts asked of the generator in one round (not the accepted-text budget of a run, "
        "loop.budget: a run's loop sets this from its quota and the acceptance rate so far).",
    )
    mode: Literal["targeted", "rebalance", "untargeted"] = Field(
        "targeted",
        description="targeted (uncertainty), rebalance (top up small classes) or untargeted (uniform).",
    )
    spread: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Share of the texts spread evenly over all classes (each gets something).",
    )
    floor: int = Field(
        4, ge=0, description="Fewest texts for a unit that gets any (low-score units get none)."
    )
    cap: int = Field(40, ge=1, description="Most texts for one unit; the excess goes to other units.")
    style: Literal["auto", "completion", "chat"] = Field(
        "auto",
        description="completion templates for base models, chat templates for instruction models; auto: "
        "chat for the openai and vllm backends, completion for the local one.",
    )
    templates: dict[str, str] = Field(
        default_factory=dict,
        description="Template per family (list, contrastive, evol_depth, evol_breadth); overrides the style.",
    )
    max_pairs: int = Field(10, ge=0, description="Most confused pairs that get a contrastive unit.")
    class_errors: bool = Field(
        False,
        description="Targeted mode: also give each class a list unit scored by its dev errors × mean "
        "uncertainty, so the classes the classifier gets wrong get texts beyond their pairs and clusters.",
    )
    family_weights: dict[str, float] = Field(
        default_factory=dict,
        description="Multiplier of the scores of each template family's units (list, contrastive, "
        "evol_depth, evol_breadth) when the budget is shared out; a family not named gets 1. Set each round "
        "by the loop when template_bandit is on.",
    )
    template_bandit: bool = Field(
        False,
        description="In a run, set family_weights before each round from the families' measured yield in "
        "the earlier rounds (accepted texts per text asked, smoothed), so the budget moves toward the "
        "templates that pay; each family keeps at least a quarter of its share to stay measured.",
    )
    hard_quantile: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Clusters at or above this quantile of mean uncertainty count as hard (evol).",
    )
    sparse_support: int = Field(
        10, ge=0, description="Classes with fewer training texts always use the list family."
    )
    n_examples: int = Field(8, ge=1, description="Few-shot examples shown per prompt.")
    samples_per_prompt: int = Field(
        4,
        ge=1,
        description="Samples drawn from one rendered prompt (same few-shot examples) before the examples are "
        "drawn again; the prompt is then evaluated once, not per sample. Rewrite (evol) prompts always "
        "change with their source text.",
    )
    example_pool: int = Field(
        16, ge=1, description="Candidate examples stored per plan item (prompts sample them)."
    )
    texts_per_prompt: int = Field(5, ge=1, description="Texts a chat prompt asks for.")
    completion_yield: int = Field(
        2, ge=1, description="Texts expected from one completion sample (list prompts)."
    )
    evol_methods: list[str] = Field(
        default_factory=lambda: list(EVOL_METHODS),
        description=f"Evol in-depth methods used: {list(EVOL_METHODS)}.",
    )
    task: str | None = Field(
        None, description="One-line task description shown in prompts (None: derived from the dataset name)."
    )
    seed: int = Field(0, description="Seed for example selection.")

    def template_for(self, family: str) -> str:
        """The template of a family: an explicit choice in ``templates``, else the style's default."""
        style = "completion" if self.style == "auto" else self.style
        return self.templates.get(family) or FAMILY_TEMPLATES[style][family]


class GenerateConfig(StrictModel):
    """Everything the generation step needs (``generate:`` in a run's config.yaml)."""

    backend: BackendConfig = Field(default_factory=LocalConfig, description="local, openai or vllm backend.")
    planner: PlannerConfig = Field(
        default_factory=PlannerConfig, description="How a round's texts are spread and which templates."
    )
    sampling: SamplingParams = Field(
        default_factory=SamplingParams,
        description="Sampling of completion prompts (chat prompts: same, with chat_max_tokens, no stops).",
    )
    chat_max_tokens: int = Field(
        192, ge=1, description="max_tokens for chat prompts (they ask for several texts)."
    )
    cache_path: Path | None = Field(
        None,
        description="SQLite LLM cache (None: <run>/llm_cache.sqlite; share one across runs to reuse calls).",
    )
    prices: PriceTable = Field(
        default_factory=PriceTable, description="Prices per model for cost accounting."
    )
    keep_surplus: bool = Field(
        True,
        description="Keep every text a sample yields, also past its unit's n_texts: more candidates per "
        "call at no extra cost (the filters and the loop's quota still decide what is used).",
    )

    def planner_settings(self) -> PlannerConfig:
        """The planner's settings with ``style: auto`` resolved from the backend kind."""
        if self.planner.style != "auto":
            return self.planner
        style = "chat" if self.backend.kind in ("openai", "vllm") else "completion"
        return self.planner.model_copy(update={"style": style})
