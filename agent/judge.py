"""The LLM label judge: one multiple-choice question per candidate text, answered with one letter.

For each :class:`JudgeItem` (a text, its intended label and a few rival labels, usually the classifier's top
others; see :func:`rivals_from_proba`) the judge renders its template (``prompts/judge_choice.jinja2`` for
instruction models, ``prompts/judge_choice_completion.jinja2`` for base models; rendered in the project's
sandbox) with the options lettered A, B, C, ... (label names made readable, optionally with a few real
example texts each) and asks which label fits. All requests of a batch go to the backend in one ``generate``
call, sorted by prompt so that consecutive prompts share their longest prefix (llama.cpp reuses the cached
prefix of the previous prompt); each request carries ``choices`` (the letters), so the local llama.cpp
backend constrains the answer to a letter and reports every letter's log-probability, and OpenAI-compatible
servers return log-probabilities (and constrain the answer when their ``extra_body`` names ``guided_choice``
or ``grammar``). Requests go through the LLM call cache (:class:`~activesynth.agent.llm.cache.CachedBackend`,
stage ``judge``); the template's sha256 is part of each request's cache key and its ``name@sha12`` is in
each verdict.

A :class:`JudgeVerdict` says which label the judge chose (the parsed letter; the likeliest option when the
answer has no letter but log-probabilities came back), each option's probability among the options, how much
probability the model put on any option letter at all (``mass``), and a ``decision``: ``agree`` (it chose the
intended label), ``disagree`` (another label, with at least ``min_confidence``), or ``unsure`` (no answer,
a failed request, or a disagreement below ``min_confidence``). An unusable answer is never an exception.

Use::

    judge = make_judge(JudgeConfig(), generator=backend, cache=LLMCache(path), examples=few_shot)
    verdicts = judge.judge([JudgeItem(text, label, rivals) for ...])
    context.llm_judge = as_filter_judge(verdicts)   # the evaluators' per-text judge callable
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from activesynth.agent.config.judge import JudgeConfig
from activesynth.agent.config.llm import SamplingParams
from activesynth.agent.llm.cache import CachedBackend, LLMCache
from activesynth.agent.llm.protocol import GenerationRequest, Result
from activesynth.agent.llm.usage import UsageMeter
from activesynth.prompts import PromptTemplate, get_template

__all__ = [
    "JudgeConfig",
    "JudgeItem",
    "JudgeVerdict",
    "LabelJudge",
    "as_filter_judge",
    "batch_calibrate",
    "judge_template",
    "make_judge",
    "parse_choice",
    "readable_label",
    "rivals_from_proba",
]

log = logging.getLogger(__name__)

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
TEMPLATES = {"chat": "judge_choice", "completion": "judge_choice_completion"}
"""The packaged judge template of each style."""
_STANDALONE_CAPITAL = re.compile(r"(?<![A-Za-z0-9'])([A-Z])(?![A-Za-z0-9'])")


@dataclass(frozen=True)
class JudgeItem:
    """One text to judge: its intended label and the rival labels to offer besides it (best first)."""

    text: str
    label: str
    rivals: tuple[str, ...] = ()
    id: str = ""


@dataclass
class JudgeVerdict:
    """What the judge said about one :class:`JudgeItem` (see the module docstring)."""

    id: str
    text: str
    label: str
    options: tuple[str, ...] = ()
    """The labels shown, in letter order (A is ``options[0]``)."""
    choice: str | None = None
    """The label the judge chose; ``None`` when it gave no usable answer."""
    letter: str | None = None
    probs: dict[str, float] | None = None
    """Each option's probability among the options (label -> p); ``None`` without log-probabilities."""
    mass: float | None = None
    """Probability the model gave to any option letter as its first token, before the constraint (low: it
    did not really answer)."""
    decision: str = "unsure"
    """``agree``, ``disagree`` or ``unsure``."""
    answer: str = ""
    """The model's raw answer."""
    error: str | None = None
    cached: bool = False
    template: str = ""
    """``name@sha12`` of the template that asked."""
    model: str = ""
    calibrated: bool = False
    """Whether ``probs``, ``choice`` and ``decision`` come from batch calibration (see
    :func:`batch_calibrate`)."""

    @property
    def agrees(self) -> bool | None:
        """Whether the judge chose the intended label; ``None`` when it chose nothing."""
        return None if self.choice is None else self.choice == self.label

    @property
    def confidence(self) -> float | None:
        """The chosen label's probability among the options (``None`` without probabilities or choice)."""
        if self.probs is None or self.choice is None:
            return None
        return self.probs.get(self.choice)

    @property
    def p_label(self) -> float | None:
        """The intended label's probability among the options."""
        return None if self.probs is None else self.probs.get(self.label)

    @property
    def relabel(self) -> str | None:
        """The label to use instead of the intended one when the judge overrules it (``disagree``)."""
        return self.choice if self.decision == "disagree" else None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["options"] = list(self.options)
        return out


def readable_label(label: str) -> str:
    """``card_arrival`` -> ``card arrival``."""
    return re.sub(r"[_\-]+", " ", label).strip()


def parse_choice(answer: str, letters: Sequence[str], options: Sequence[str] = ()) -> str | None:
    """The option letter an answer names, or ``None`` (never an exception).

    The first stand-alone capital letter of the first line that is one of ``letters`` (``"B"``, ``"B)"``,
    ``"(B)"``, ``"Answer: B"``, ``"I think B"``); else a lone lower-case letter (``"b."``); else the letter of
    the option whose (readable) label the first line spells exactly.
    """
    if not isinstance(answer, str):
        return None
    lines = [ln.strip() for ln in answer.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    first = lines[0]
    allowed = set(letters)
    for m in _STANDALONE_CAPITAL.finditer(first):
        if m.group(1) in allowed:
            return m.group(1)
    bare = first.strip("()[]{}.:;,*'\"` ").upper()
    if len(bare) == 1 and bare in allowed:
        return bare

    def canon(s: str) -> str:
        return re.sub(r"[\s_\-]+", " ", s.strip("()[]{}.:;,*'\"` ").casefold()).strip()

    spelled = canon(re.sub(r"^(?:answer|label)\s*:\s*", "", first, flags=re.IGNORECASE))
    for letter, label in zip(letters, options, strict=False):
        if spelled and spelled in (canon(label), canon(readable_label(label))):
            return letter
    return None


def rivals_from_proba(
    proba: np.ndarray, classes: Sequence[str], labels: Sequence[str], k: int
) -> list[tuple[str, ...]]:
    """Per row, the ``k`` classes the classifier finds likeliest besides the row's label (best first)."""
    proba = np.asarray(proba, dtype=np.float64)
    out = []
    for row, label in zip(proba, labels, strict=True):
        ranked = [classes[j] for j in np.argsort(-row, kind="stable") if classes[j] != label]
        out.append(tuple(ranked[:k]))
    return out


def judge_template(config: JudgeConfig, backend=None) -> PromptTemplate:
    """The template ``config`` names, else the packaged one of its style (``auto``: completion for a local
    model without a chat template, chat otherwise)."""
    if config.template:
        return get_template(config.template)
    style = config.style
    if style == "auto":
        inner = backend.backend if isinstance(backend, CachedBackend) else backend
        style = "chat"
        if getattr(inner, "name", "") == "local" and not getattr(inner, "chat_template", None):
            style = "completion"
    return get_template(TEMPLATES[style])


@dataclass
class _Question:
    """One item made into a request (``request`` is ``None`` when there is nothing to ask)."""

    index: int
    item: JudgeItem
    options: tuple[str, ...]
    letters: tuple[str, ...]
    request: GenerationRequest | None = None
    sort_key: str = ""


class LabelJudge:
    """Asks ``backend`` (ideally a :class:`CachedBackend`; see :func:`make_judge`) about items.

    ``examples`` maps a label to real texts of it (the first ``examples_per_option`` are shown under the
    option); ``task`` says what the texts are (e.g. "Messages that customers send to their bank").
    """

    def __init__(
        self,
        backend,
        config: JudgeConfig | None = None,
        *,
        examples: Mapping[str, Sequence[str]] | None = None,
        task: str = "",
        template: PromptTemplate | None = None,
    ) -> None:
        self.backend = backend
        self.config = config or JudgeConfig()
        self.template = template or judge_template(self.config, backend)
        self.task = task.strip().rstrip(".")
        k = self.config.examples_per_option
        self.examples = {
            label: [self._cut(t, self.config.example_chars) for t in texts[:k]]
            for label, texts in (examples or {}).items()
            if k
        }
        self.owns_backend = False
        """Whether :meth:`close` frees the backend (set by :func:`make_judge` for a backend of its own)."""

    @property
    def model_id(self) -> str:
        return getattr(self.backend, "model_id", "")

    def close(self) -> None:
        """Free the judge's own backend (a shared generator backend is left to its owner)."""
        if self.owns_backend:
            self.backend.close()

    def judge(
        self, items: Sequence[JudgeItem], on_verdict: Callable[[JudgeVerdict], None] | None = None
    ) -> list[JudgeVerdict]:
        """One verdict per item, in the items' order."""
        t0 = time.perf_counter()
        questions = [self._question(i, item) for i, item in enumerate(items)]
        verdicts: list[JudgeVerdict | None] = [None] * len(items)
        for q in questions:
            if q.request is None:
                verdicts[q.index] = self._verdict(q, None, "no rival labels to choose from")
        asked = sorted((q for q in questions if q.request is not None), key=lambda q: q.sort_key)
        bs = self.config.batch_size
        for start in range(0, len(asked), bs):
            batch = asked[start : start + bs]
            by_id = {q.request.id: q for q in batch}
            results: dict[str, Result] = {}
            try:
                for res in self.backend.generate([q.request for q in batch]):
                    results.setdefault(res.request_id, res)
            except Exception as exc:  # noqa: BLE001 - a failed batch leaves its verdicts unsure, not lost
                log.warning("llm judge batch failed: %s: %s", type(exc).__name__, exc)
                results = {
                    rid: Result(request_id=rid, sample_index=0, error=f"{type(exc).__name__}: {exc}")
                    for rid in by_id
                }
            for rid, q in by_id.items():
                v = self._verdict(q, results.get(rid), None if rid in results else "no result from backend")
                verdicts[q.index] = v
                if on_verdict:
                    on_verdict(v)
        out = [v for v in verdicts if v is not None]
        if self.config.calibrate == "batch":
            out = batch_calibrate(out, self.config.min_confidence, self.config.calibrate_min)
        _log_summary(out, time.perf_counter() - t0, self.model_id)
        return out

    # -- questions -------------------------------------------------------------------------------------
    def options_for(self, item: JudgeItem) -> tuple[str, ...]:
        """The labels offered for ``item`` in letter order: its label and up to ``rivals`` rivals."""
        rivals: list[str] = []
        for r in item.rivals:
            if r != item.label and r not in rivals:
                rivals.append(r)
        labels = [item.label, *rivals[: self.config.rivals]]
        if self.config.option_order == "alphabetical":
            return tuple(sorted(labels, key=lambda s: (readable_label(s).casefold(), s)))
        seed = self.config.seed
        return tuple(sorted(labels, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest()))

    def _question(self, index: int, item: JudgeItem) -> _Question:
        options = self.options_for(item)
        letters = tuple(LETTERS[: len(options)])
        q = _Question(index=index, item=item, options=options, letters=letters)
        if len(options) < 2:
            return q
        pairs = list(zip(letters, options, strict=True))
        rendered = self.template.render(
            task=self.task,
            text=self._cut(item.text, self.config.text_chars),
            options=[{"letter": le, "label": readable_label(lab)} for le, lab in pairs],
            examples={le: self.examples.get(lab, []) for le, lab in pairs},
            letters=", ".join(letters[:-1]) + " or " + letters[-1],
        )
        cfg = self.config
        sampling = SamplingParams(
            temperature=cfg.temperature,
            top_p=1.0,
            max_tokens=cfg.max_tokens,
            stop=list(self.template.stop) if self.template.mode == "completion" else [],
            seed=cfg.seed,
        )
        messages = tuple((m["role"], m["content"]) for m in rendered.messages or ()) or None
        q.request = GenerationRequest(
            id=f"judge-{index:06d}",
            mode=self.template.mode,
            prompt=rendered.prompt,
            messages=messages,
            sampling=sampling,
            template=self.template.name,
            template_version=self.template.version,
            choices=letters,
            meta=(
                ("stage", "judge"),
                ("item", item.id),
                ("label", item.label),
                ("options", json.dumps(list(options), ensure_ascii=False)),
            ),
        )
        q.sort_key = rendered.text
        return q

    @staticmethod
    def _cut(text: str, n: int) -> str:
        text = " ".join(str(text).split())
        return text if len(text) <= n else text[: n - 1].rstrip() + "…"

    # -- answers ---------------------------------------------------------------------------------------
    def _verdict(self, q: _Question, res: Result | None, error: str | None) -> JudgeVerdict:
        v = JudgeVerdict(
            id=q.item.id,
            text=q.item.text,
            label=q.item.label,
            options=q.options,
            template=self.template.ref,
            model=self.model_id,
            error=error,
        )
        if res is None:
            return v
        v.answer, v.cached, v.error = res.text, res.cached, res.error
        if not res.ok:
            return v
        v.probs, v.mass = _option_probs(res.choice_logprobs, q.letters, q.options)
        letter = parse_choice(res.text, q.letters, q.options)
        if letter is None and v.probs:
            letter = q.letters[q.options.index(max(v.probs, key=v.probs.get))]
        if letter is None:
            return v
        v.letter = letter
        v.choice = q.options[q.letters.index(letter)]
        v.decision = _decide(v, self.config.min_confidence)
        return v


def _option_probs(
    logprobs: Mapping[str, float] | None, letters: Sequence[str], options: Sequence[str]
) -> tuple[dict[str, float] | None, float | None]:
    """(label -> probability among the options, total probability on the option letters) from the
    letters' log-probabilities; letters the backend did not report count as probability 0."""
    known: dict[str, float] = {}
    for le, lp in (logprobs or {}).items() if isinstance(logprobs, Mapping) else ():
        try:
            value = float(lp)
        except (TypeError, ValueError):
            continue
        if le in letters and math.isfinite(value):
            known[le] = value
    if not known:
        return None, None
    top = max(known.values())
    weights = {le: math.exp(lp - top) for le, lp in known.items()}
    total = sum(weights.values())
    probs = {lab: weights.get(le, 0.0) / total for le, lab in zip(letters, options, strict=True)}
    mass = sum(math.exp(lp) for lp in known.values())
    return probs, min(1.0, mass)


def batch_calibrate(
    verdicts: Sequence[JudgeVerdict], min_confidence: float = 0.5, min_items: int = 20
) -> list[JudgeVerdict]:
    """Verdicts re-decided after batch calibration: each option's probability is divided by the mean
    probability of its letter over all verdicts with probabilities, renormalized, and the likeliest option is
    the choice. With options in a mixed order, a letter's mean estimates the model's preference for the
    letter itself. Fewer than ``min_items`` verdicts with probabilities: returned unchanged."""
    rows = [v for v in verdicts if v.probs]
    if len(rows) < min_items:
        return list(verdicts)
    width = max(len(v.options) for v in rows)
    total, count = np.zeros(width), np.zeros(width)
    for v in rows:
        for j, lab in enumerate(v.options):
            total[j] += v.probs[lab]
            count[j] += 1
    prior = total / np.maximum(count, 1)
    out = []
    for v in verdicts:
        if not v.probs:
            out.append(v)
            continue
        w = np.array([v.probs[lab] / max(prior[j], 1e-12) for j, lab in enumerate(v.options)])
        w = w / w.sum()
        j = int(np.argmax(w))
        probs = {lab: float(w[k]) for k, lab in enumerate(v.options)}
        c = replace(v, probs=probs, choice=v.options[j], letter=LETTERS[j], calibrated=True)
        c.decision = _decide(c, min_confidence)
        out.append(c)
    return out


def _decide(v: JudgeVerdict, min_confidence: float) -> str:
    if v.choice == v.label:
        return "agree"
    conf = v.confidence
    if (conf is not None and conf >= min_confidence) or (conf is None and min_confidence == 0):
        return "disagree"
    return "unsure"


def _log_summary(verdicts: list[JudgeVerdict], seconds: float, model: str) -> None:
    if not verdicts:
        return
    counts = {d: sum(v.decision == d for v in verdicts) for d in ("agree", "disagree", "unsure")}
    log.info(
        "llm judge (%s): %d texts, %d agree, %d disagree, %d unsure (%d cached, %d failed) in %.1fs",
        model,
        len(verdicts),
        counts["agree"],
        counts["disagree"],
        counts["unsure"],
        sum(v.cached for v in verdicts),
        sum(v.error is not None for v in verdicts),
        seconds,
    )


def as_filter_judge(verdicts: Sequence[JudgeVerdict]) -> Callable[[str, str, Sequence[str]], str]:
    """The evaluators' per-text judge (``FilterContext.llm_judge``: ``judge(text, label, labels) ->
    answer``) answering from verdicts made in advance: the chosen label when the verdict is ``agree`` or
    ``disagree``, an empty answer (unclear) otherwise or for a text that was not judged."""
    table = {(v.text, v.label): v for v in verdicts}

    def llm_judge(text: str, label: str, labels: Sequence[str]) -> str:
        v = table.get((text, label))
        if v is None or v.decision == "unsure" or v.choice is None:
            return ""
        return v.choice

    return llm_judge


def make_judge(
    config: JudgeConfig,
    *,
    generator=None,
    cache: LLMCache | str | Path,
    meter: UsageMeter | None = None,
    examples: Mapping[str, Sequence[str]] | None = None,
    task: str = "",
) -> LabelJudge:
    """A judge whose requests go through the call cache (stage ``judge`` in ``meter``).

    Its backend is built from ``config.backend``, or is the generator's (``generator``, a backend or a
    :class:`CachedBackend` around one) when that is ``None``; the cache is an :class:`LLMCache` or its path.
    """
    if config.backend is not None:
        from activesynth.agent.llm import make_backend

        base = make_backend(config.backend)
    elif generator is not None:
        base = generator.backend if isinstance(generator, CachedBackend) else generator
    else:
        raise ValueError("judge.backend is not set (same as the generator), but no generator was given")
    store = cache if isinstance(cache, LLMCache) else LLMCache(cache)
    backend = CachedBackend(base, store, meter, stage="judge")
    judge = LabelJudge(backend, config, examples=examples, task=task)
    judge.owns_backend = config.backend is not None
    return judge
