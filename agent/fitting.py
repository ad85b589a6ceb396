"""Fit prompts and outputs to the model: size ``max_tokens`` from the data's text lengths, shorten a few-shot
prompt that would not fit the model's context, and say when a round's outputs are mostly unusable.

A prompt is counted with the model's own tokenizer only when a cheap bound cannot prove it fits: a text of
``b`` UTF-8 bytes has at most ``b`` tokens under byte-level BPE and SentencePiece with byte fallback, so a
prompt whose bytes plus ``max_tokens`` stay below a context every model of the backend has (``floor``) is not
counted at all. Short-text datasets (BANKING77, CLINC150) therefore never load a tokenizer for this.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from activesynth.agent.llm.protocol import GenerationRequest

__all__ = ["PromptFit", "needed_tokens", "unusable_warning"]

log = logging.getLogger(__name__)

_SLACK = 64  # chat-template and special tokens a request may add around its text


def _text(req: GenerationRequest) -> str:
    return req.prompt if req.mode == "completion" else "\n".join(c for _, c in req.messages or ())


@dataclass
class PromptFit:
    """Whether a request fits the model's context; built from a backend with :meth:`for_backend`."""

    count: Callable[[GenerationRequest], int | None]
    context: Callable[[], int | None]
    floor: int = 0

    @classmethod
    def for_backend(cls, backend, floor: int = 0) -> PromptFit | None:
        """None when the backend cannot count tokens (then nothing is shortened)."""
        count = getattr(backend, "count_request_tokens", None)
        if count is None:
            return None
        return cls(count=count, context=lambda: getattr(backend, "context_size", None), floor=floor)

    def fits(self, req: GenerationRequest) -> bool:
        if len(_text(req).encode("utf-8")) + req.sampling.max_tokens + _SLACK <= self.floor:
            return True
        limit = self.context()
        if not limit:
            return True
        n = self.count(req)
        return n is None or n + req.sampling.max_tokens <= limit


def needed_tokens(texts: Sequence[str], count: Callable[[str], int | None] | None = None) -> int:
    """Tokens one typical long text of the data needs: the 90th percentile of ``texts`` plus room for its
    list number and the stop; counted exactly when ``count`` is given, else estimated from bytes (3 a
    token)."""
    if not texts:
        return 0
    lengths = []
    for t in texts:
        n = count(t) if count is not None else None
        lengths.append(n if n is not None else len(t.encode("utf-8")) // 3 + 1)
    lengths.sort()
    return lengths[min(len(lengths) - 1, math.ceil(0.9 * len(lengths)) - 1)] + 8


def unusable_warning(stats: dict, threshold: float = 0.3) -> str | None:
    """A one-line warning when more than ``threshold`` of a round's outputs were unusable, with the reasons
    and what to change; None otherwise."""
    bad = {k.split(":", 1)[1]: v for k, v in stats.items() if k.startswith("unusable:") and v}
    total = sum(bad.values()) + int(stats.get("parsed", 0))
    if not total or sum(bad.values()) / total <= threshold:
        return None
    hints = {
        "truncated": "raise generate.sampling.max_tokens",
        "prompt_too_long": "raise generate.backend.n_ctx_max or lower generate.planner.n_examples",
        "backend_error": "see the failures in candidates.jsonl",
    }
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(bad.items(), key=lambda kv: -kv[1]))
    todo = "; ".join(h for k, h in hints.items() if k in bad)
    share = sum(bad.values()) / total
    return f"{share:.0%} of this round's outputs were unusable ({reasons})" + (f": {todo}" if todo else "")
