"""One protocol for every backend: requests in, texts plus usage out."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from activesynth.agent.config.llm import SamplingParams

__all__ = [
    "PROMPT_TOO_LONG",
    "Backend",
    "BackendError",
    "GenerationRequest",
    "OnResult",
    "Result",
    "SamplingParams",
    "canonical_json",
    "choice_grammar",
]


PROMPT_TOO_LONG = "prompt_too_long"
"""Reason code of a request whose prompt plus ``max_tokens`` does not fit the model's context (never sent)."""


class BackendError(RuntimeError):
    """A backend that cannot work (wrong key, unreachable server, missing runtime); a one-line message."""


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to sample ``n`` times. ``prompt`` for completion mode, ``messages`` for chat mode.

    ``template_version`` and ``sample_index`` are part of the cache key, so a template edit or a new sample
    never reuses an old answer. ``meta`` says what the request is for (plan item, label, template family,
    the few-shot examples shown as JSON); it is not part of the cache key.

    ``choices`` (e.g. ``("A", "B", "C")``) asks for an answer that is one of these strings: backends that can
    constrain the answer do (llama.cpp: only the choices' tokens may be sampled first), and backends that
    see log-probabilities report each choice's in :attr:`Result.choice_logprobs`. It enters the cache key
    only when set, so the keys of requests without it are what they always were.
    """

    id: str
    mode: str
    prompt: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    n: int = 1
    template: str = ""
    template_version: str = ""
    first_sample: int = 0
    meta: tuple[tuple[str, str], ...] = ()
    choices: tuple[str, ...] = ()

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages or ()]

    def canonical(self, model_id: str, sample_index: int) -> dict[str, Any]:
        """The cache-key material: model, prompt or messages, sampling, template version, sample index, and
        the allowed ``choices`` when there are any."""
        key = {
            "model": model_id,
            "mode": self.mode,
            "prompt": self.prompt,
            "messages": self.message_dicts() if self.messages else None,
            "sampling": self.sampling.model_dump(mode="json"),
            "template_version": self.template_version,
            "sample_index": sample_index,
        }
        if self.choices:
            key["choices"] = list(self.choices)
        return key

    def cache_key(self, model_id: str, sample_index: int) -> str:
        return hashlib.sha256(canonical_json(self.canonical(model_id, sample_index)).encode()).hexdigest()

    def sample_indices(self) -> range:
        return range(self.first_sample, self.first_sample + self.n)


@dataclass
class Result:
    """One sample of one request. ``error`` is set (and ``text`` is empty) when all retries failed."""

    request_id: str
    sample_index: int
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    cached: bool = False
    error: str | None = None
    attempts: int = 1
    choice_logprobs: dict[str, float] | None = None
    """Log-probability of each of the request's ``choices`` as the answer's first token (variants such as a
    leading space summed), from the model's distribution before any constraint; choices the backend did not
    see (outside a server's top log-probabilities) are missing. ``None`` when the request had no choices or
    the backend gives no log-probabilities."""

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


OnResult = Callable[[GenerationRequest, Result], None]


@runtime_checkable
class Backend(Protocol):
    """What every backend offers. ``model_id`` names the model in cache keys and records."""

    name: str
    model_id: str

    def check(self) -> None:
        """Fail fast with a one-line :class:`BackendError` (bad key, unreachable server, missing runtime)."""

    def generate(self, requests: list[GenerationRequest], on_result: OnResult | None = None) -> list[Result]:
        """Sample every request ``n`` times; ``on_result`` is called as each sample finishes."""

    def close(self) -> None:
        """Free models, sockets and threads."""


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces) used for hashing."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def choice_grammar(choices: Sequence[str]) -> str:
    """A GBNF grammar whose sentences are the ``choices`` (an optional leading space allowed)."""

    def literal(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    return 'root ::= " "? (' + " | ".join(literal(c) for c in choices) + ")"
