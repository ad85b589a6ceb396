"""Settings of the likelihood verifier (:mod:`activesynth.agent.verify`): the generator model scores each
candidate text under the few-shot context of its intended label and under the contexts of its top rival
labels; the per-token log-likelihood ratio (own minus best rival) keeps, drops, flags or relabels it.

Not yet part of :class:`~activesynth.agent.config.run.RunConfig`; the loop and the filters take it from there.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from activesynth.agent.config.base import StrictModel

__all__ = ["VerifierConfig"]


class VerifierConfig(StrictModel):
    """How the likelihood verifier builds its contexts and what its scores mean."""

    enabled: bool = Field(False, description="Run the likelihood verifier on candidate texts at all.")
    model: str | None = Field(
        None,
        description="Local GGUF model that scores (a bundled name such as gemma3-270m, a packaged name or a "
        ".gguf path); None: the run's generator model (generate.backend.model of a local backend).",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads of llama.cpp (None: the generator backend's threads setting, else "
        "llama.cpp's default of half the cores). On a shared machine 1 thread is often as fast.",
    )
    n_ctx: int = Field(
        2048,
        ge=256,
        description="llama.cpp context in tokens (one context prefix plus one candidate must fit; a prefix "
        "longer than half of it shows fewer examples). The KV cache is allocated for all of it.",
    )
    template: str = Field(
        "self_instruct_list",
        description="Completion template that renders a label's context (name, name@sha12 or a .jinja2 "
        "path); it gets the variables task, label_text and examples and must end where the next item's text "
        "begins (like the list template the generator uses).",
    )
    n_examples: int = Field(
        8,
        ge=1,
        le=64,
        description="Real example texts of a label shown in its context (a seeded sample of the label's "
        "examples; all when it has fewer).",
    )
    rivals: int = Field(
        2,
        ge=1,
        le=25,
        description="Rival labels scored besides the intended one per candidate (the first of the rivals "
        "the caller gives, usually the classifier's top others). Each costs one pass over the candidate's "
        "tokens.",
    )
    threshold: float = Field(
        -0.1,
        description="Least per-token log-likelihood ratio, own context minus the best rival's (nats per "
        "token), that keeps a candidate; below it the candidate gets verdict. Measured on 300 real BANKING77 "
        "texts (half with the 10-shot classifier's most confusable wrong label; Gemma-3-270M, 8 examples, "
        "2 rivals): -0.1 keeps 89 % of right and 22 % of wrong labels alone, 85 % and 9 % together with the "
        "classifier's margin rule (which alone keeps 93 % and 21 %); 0.0 keeps 81 % and 15 %.",
    )
    verdict: Literal["drop", "review", "relabel"] = Field(
        "drop",
        description="What a candidate below threshold gets: drop, review (flag for a person), or relabel "
        "(take the best rival's label when that rival beats the own label by at least relabel_margin; "
        "otherwise drop).",
    )
    relabel_margin: float = Field(
        0.3,
        ge=0.0,
        description="With verdict relabel: how many nats per token the best rival must be likelier than the "
        "intended label for the text to take the rival's label. Measured as for threshold (1 rival): at 0.3 "
        "63 % of wrong labels were relabelled, 99 % of them to the gold label, but 6 % of right labels were "
        "relabelled too; since a wrong label costs about six right ones, prefer drop unless another check "
        "(the classifier) agrees.",
    )
    score_end: bool = Field(
        True,
        description="Also score the end of the text (the line break that closes the list item), so that a "
        "text which stops early or runs on is judged too.",
    )
    max_cached_prefixes: int = Field(
        128,
        ge=1,
        description="Label contexts whose evaluated KV state is kept in memory for later calls (least "
        "recently used dropped first). With Gemma-3-270M a context of 8 BANKING77 examples (160 tokens) "
        "takes 3 MB.",
    )
    seed: int = Field(0, description="Seed of the example sample of each label's context.")
