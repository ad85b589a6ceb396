"""The shared interface of the candidate filters: ``Evaluator.judge(candidates, context) -> list[Decision]``.

Every evaluator returns one :class:`Decision` per candidate, in input order, for *every* candidate (also
those an earlier evaluator dropped), so each candidate's record shows what each filter thought of it.
A decision's ``reason`` always starts with a short code (``"near_duplicate: rougeL=0.82 ..."``); reports
group by evaluator and code.

An evaluator is a pydantic model whose fields are its settings (a built-in one subclasses its settings model
from ``activesynth.agent.config.filters``), with one verb, :meth:`Evaluator.judge`. Adding one means adding a
file in ``evaluators/`` with a class decorated ``@register("name")``; it can then be named in
``FilterConfig.order`` (its settings under ``FilterConfig.plugins``).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

__all__ = [
    "Candidate",
    "Decision",
    "Evaluator",
    "FilterContext",
    "LLMJudge",
    "SealedTexts",
    "Verdict",
    "nearest_text",
    "register",
    "registry",
]

log = logging.getLogger(__name__)


class Verdict(StrEnum):
    """What an evaluator thinks of a candidate: keep it, drop it, or keep it flagged for a human."""

    KEEP = "keep"
    DROP = "drop"
    REVIEW = "review"


@dataclass(frozen=True)
class Decision:
    """One evaluator's verdict on one candidate; ``reason`` is ``"<code>: <detail>"``.

    ``relabel`` (not serialized) gives the candidate another label for later evaluators and the accepted
    record (which keeps the intended one as ``relabeled_from``), when a check is sure the text belongs
    elsewhere.
    ``rewrite`` (not serialized) lets an evaluator replace the candidate's text for later evaluators and the
    accepted record (used by the PII filter in scrub mode).
    """

    evaluator: str
    verdict: Verdict
    score: float | None
    reason: str
    rewrite: str | None = field(default=None, compare=False)
    relabel: str | None = field(default=None, compare=False)

    @property
    def code(self) -> str:
        """The reason's code, the part before the first colon."""
        return self.reason.split(":", 1)[0].strip()

    def to_dict(self) -> dict[str, Any]:
        """The decisions.jsonl form: evaluator, verdict, score, reason."""
        score = None if self.score is None else round(float(self.score), 6)
        return {
            "evaluator": self.evaluator,
            "verdict": str(self.verdict),
            "score": score,
            "reason": self.reason,
        }


@dataclass
class Candidate:
    """A candidate record (see CONTRACTS.md) with the few fields evaluators read pulled out."""

    id: str
    text: str
    label: str
    source_text: str | None = None
    prompt_id: str | None = None
    status: str = "parsed"
    record: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Candidate:
        """Build from a candidates.jsonl object; ``id``, ``text`` and ``label`` are required."""
        missing = [k for k in ("id", "text", "label") if k not in record]
        if missing:
            raise ValueError(f"candidate record lacks {', '.join(missing)}")
        if not isinstance(record["text"], str) or not isinstance(record["label"], str):
            raise ValueError("candidate text and label must be strings")
        return cls(
            id=str(record["id"]),
            text=record["text"],
            label=record["label"],
            source_text=record.get("source_text"),
            prompt_id=record.get("prompt_id"),
            status=record.get("status") or "parsed",
            record=dict(record),
        )


class SealedTexts(Protocol):
    """What the leakage guard needs from ``agent.datasets.SealedSplit``."""

    def reveal(self, purpose: str) -> Any: ...


LLMJudge = Callable[[str, str, Sequence[str]], str]
"""``judge(text, label, labels) -> answer``: the label an LLM thinks ``text`` belongs to."""


@dataclass
class FilterContext:
    """Everything evaluators may consult besides the candidates themselves.

    Args:
        labels: the dataset's label set.
        real_texts: the real training texts (few-shot examples included); reference set for dedup.
        accepted_texts: synthetic texts accepted in earlier rounds; also a reference set.
        embedder: an ``agent.embed.Embedder`` (or anything with ``encode(texts) -> (n, d)`` normalized).
        classifier: the current classifier (``predict_proba``, ``classes_``).
        test: the sealed test split; only the leakage guard reveals it.
        prompts: prompt text by ``prompt_id``, to catch copies of the prompt.
        few_shot_texts: few-shot examples shown to the generator, to catch copies.
        labelled: real labelled texts a label check may compare with, as (texts, labels): train and dev
            (never the selection split or test); used by ``label_neighbors``.
        generator: the run's generator backend settings (``generate.backend``), for checks that use the
            generator model itself (``likelihood``).
        task: the task line prompts show (``plan.task``).
        llm_cache: the run's LLM call cache (checks that ask a model store their answers there; None: a
            temporary one).
        llm_judge: optional second opinion on labels (see :data:`LLMJudge`).
        active: set by the chain before each evaluator: False for candidates an earlier evaluator dropped.
            Greedy evaluators let only active candidates join their reference sets.
    """

    labels: Sequence[str] = field(default=(), repr=False)
    real_texts: Sequence[str] = field(default=(), repr=False)
    accepted_texts: Sequence[str] = field(default=(), repr=False)
    embedder: Any = field(default=None, repr=False)
    classifier: Any = field(default=None, repr=False)
    test: SealedTexts | None = field(default=None, repr=False)
    prompts: Mapping[str, str] = field(default_factory=dict, repr=False)
    few_shot_texts: Sequence[str] = field(default=(), repr=False)
    labelled: tuple[Sequence[str], Sequence[str]] = field(default=((), ()), repr=False)
    generator: Any = field(default=None, repr=False)
    task: str = ""
    llm_cache: Path | None = None
    llm_judge: LLMJudge | None = None
    active: list[bool] | None = None

    def is_active(self, n: int) -> list[bool]:
        """The ``active`` mask, or all True when the evaluator runs outside a chain."""
        if self.active is None:
            return [True] * n
        if len(self.active) != n:
            raise ValueError(f"context.active has {len(self.active)} entries for {n} candidates")
        return list(self.active)

    def examples_by_label(self) -> dict[str, list[str]]:
        """The labelled real texts grouped by label."""
        out: dict[str, list[str]] = {}
        for text, label in zip(*self.labelled, strict=True):
            out.setdefault(label, []).append(text)
        return out

    def rivals(self, texts: Sequence[str], labels: Sequence[str], k: int) -> list[tuple[str, ...]]:
        """Per text, the classifier's ``k`` most likely labels other than its own, best first."""
        from activesynth.agent.judge import rivals_from_proba

        proba = self.classifier.predict_proba(list(texts))
        return rivals_from_proba(proba, list(self.classifier.classes_), labels, k)

    def reference_texts(self) -> list[str]:
        """Real training texts followed by earlier accepted synthetic texts."""
        return list(self.real_texts) + list(self.accepted_texts)


def nearest_text(
    pos: int, n_real: int, n_ref: int, candidates: Sequence[Candidate], joined: Sequence[int]
) -> str:
    """What position ``pos`` of a greedy dedup index is: a real training text (``pos < n_real``), a text
    accepted in an earlier round (``pos < n_ref``), or a candidate of this batch that joined before
    (``joined`` lists, in joining order, the indices of the candidates that joined)."""
    if pos < n_real:
        return f"real training text #{pos}"
    if pos < n_ref:
        return "a text accepted in an earlier round"
    return f"candidate {candidates[joined[pos - n_ref]].id} of this batch"


registry: dict[str, type[Evaluator]] = {}
"""Every evaluator by name: the built-in ones and any plug-in that was imported."""


def register(name: str):
    """Class decorator: give an evaluator its ``name`` and add it to :data:`registry`."""

    def add(cls: type[Evaluator]) -> type[Evaluator]:
        if name in registry and registry[name].__qualname__ != cls.__qualname__:
            raise TypeError(f"two evaluators are named {name!r}")
        cls.name = name
        registry[name] = cls
        return cls

    return add


class Evaluator(BaseModel, ABC):
    """A filter with one verb, :meth:`judge`; its fields are its settings (``RougeLFilter(max_f=0.8)``)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    name: ClassVar[str] = ""

    @abstractmethod
    def judge(self, candidates: Sequence[Candidate], context: FilterContext) -> list[Decision]:
        """Return one decision per candidate, in order."""

    # helpers for subclasses
    def keep(self, reason: str, score: float | None = None) -> Decision:
        return Decision(self.name, Verdict.KEEP, score, reason)

    def drop(self, reason: str, score: float | None = None) -> Decision:
        return Decision(self.name, Verdict.DROP, score, reason)

    def review(self, reason: str, score: float | None = None) -> Decision:
        return Decision(self.name, Verdict.REVIEW, score, reason)
