"""Verification by the generator itself: is a candidate text likelier under its own label's few-shot context
than under the contexts of its rival labels?

For every label that is needed the verifier renders a *context prefix* exactly as the generator's list
template does (``prompts/self_instruct_list.jinja2`` by default: the task line, ``Each line below is a
different real message with the intent "<label text>".``, numbered real examples of the label, then the next
number) and evaluates it once with a local GGUF model through llama.cpp. A candidate is then scored by
evaluating only its own tokens after the prefix (plus the line break that ends a list item, so that "the
text ends here" is scored too) and summing their log-probabilities: ``log p(text | context of label)``.

Per candidate (:class:`VerifyItem`: text, intended label, rival labels such as the classifier's top others)
the verifier reports the log-probability under its own label's context and under each of the first
``rivals`` rivals' contexts, their per-token averages, and the per-token log-likelihood ratio
``(log p(own) - max log p(rival)) / tokens``. A ratio of at least ``threshold`` keeps the text; below it the
text is dropped, flagged for review or relabelled to the best rival (:func:`decide`).

KV reuse: all work of a call is grouped by context. The context that is *resident* sits in llama.cpp's KV
cache as sequence 0 without its last token; each candidate is decoded as ``[last prefix token] + candidate
tokens + [end]`` at the following positions, with logits for those positions only, and then removed again
(``llama_memory_seq_rm``), so a prefix is never evaluated twice. When a call moves to another context, the
resident one stays available as a saved sequence state (``llama_state_seq_get_data``; about 18 KB per token
with Gemma-3-270M, 3 MB for a BANKING77 context of 8 examples; at most ``max_cached_prefixes`` of them,
least recently used dropped first), and a context seen before, in this call or a later one, is restored with
``llama_state_seq_set_data`` in about a millisecond instead of being evaluated again (about 1.6 s for 160
tokens on one busy core). Scores equal an evaluation of prefix + text in one pass from an empty cache
(tested, to the bit on this machine).

Runtime: the verifier holds its own model and context through llama.cpp's C API (``llama_cpp``'s low-level
bindings; separate from the generator backend's ``Llama``, whose prompt cache it would otherwise corrupt),
loaded on first use with the local backend's portable settings and two changes: repacked weight layouts
off (with them llama.cpp rounds differently depending on how many tokens a batch holds, and one text's
score moved by up to 0.4 nats with the batch it was cut into; without them it does not, at no cost per
candidate and about 15 % more time per prefix), and a full-size sliding-window cache (``swa_full``, so that
no cell a later candidate needs is pruned when a prefix outgrows the model's attention window; 18 KB per
token of ``n_ctx``). Scores are deterministic: each context's examples are a seeded sample and nothing is
sampled. The cost of a check is one pass over the candidate's tokens per context, and with Gemma-3-270M
it is dominated by the output layer over its 262,144-token vocabulary (needed to normalise every
probability): about 0.4 to 0.5 s per (text, context) pass of 15 tokens on one busy core.

Use::

    verifier = LikelihoodVerifier(VerifierConfig(), examples=real_texts_by_label, task=plan.task,
                                  generator=config.generate.backend)
    results = verifier.verify([VerifyItem(text, label, rivals) for ...])   # one round's candidates at once
    verifier.close()
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import logging
import os
import random
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from activesynth.agent.config.verify import VerifierConfig
from activesynth.agent.llm.protocol import BackendError
from activesynth.prompts import PromptTemplate, get_template

__all__ = [
    "DEFAULT_TASK",
    "LikelihoodVerifier",
    "Verification",
    "VerifierConfig",
    "VerifierStats",
    "VerifyItem",
    "decide",
    "model_spec",
]

log = logging.getLogger(__name__)

DEFAULT_TASK = "Short texts, each labelled with its category"
_SENTINEL = "\u2063VERIFY\u2063"  # an example text that cannot occur in a template, to find where items go
_N_BATCH = 512  # tokens per llama_decode call (llama.cpp's default n_batch)


@dataclass(frozen=True)
class VerifyItem:
    """One candidate text to verify: its intended label and the rival labels to compare (best first)."""

    text: str
    label: str
    rivals: tuple[str, ...] = ()
    id: str = ""


@dataclass
class Verification:
    """What the verifier found for one :class:`VerifyItem`."""

    id: str
    text: str
    label: str
    n_tokens: int = 0
    """Tokens scored: the text's tokens plus the end of the item when ``score_end``."""
    logprob: float | None = None
    """``log p(text | context of label)`` in nats; ``None`` when it could not be scored."""
    rival_logprobs: dict[str, float] = field(default_factory=dict)
    """The same under each rival's context (rivals without examples are left out)."""
    best_rival: str | None = None
    """The rival whose context gives the text the highest likelihood."""
    ratio: float | None = None
    """Per-token log-likelihood ratio ``(logprob - rival_logprobs[best_rival]) / n_tokens``."""
    decision: str = "unchecked"
    """``keep``, ``drop``, ``review``, ``relabel`` or ``unchecked`` (nothing to compare; see ``reason``)."""
    relabel: str | None = None
    """The label to use instead (``decision == "relabel"``)."""
    reason: str = ""
    error: str | None = None

    @property
    def per_token(self) -> float | None:
        """Average log-probability per scored token under the own label's context."""
        return None if self.logprob is None or not self.n_tokens else self.logprob / self.n_tokens

    @property
    def rival_per_token(self) -> dict[str, float]:
        """Average log-probability per scored token under each rival's context."""
        return {k: v / self.n_tokens for k, v in self.rival_logprobs.items()} if self.n_tokens else {}

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["per_token"] = self.per_token
        out["rival_per_token"] = self.rival_per_token
        return out


@dataclass
class VerifierStats:
    """Work done since the verifier was made (counts and seconds)."""

    prefix_evals: int = 0
    """Context prefixes evaluated by the model (once per label context, unless dropped from the cache)."""
    prefix_tokens: int = 0
    state_bytes: int = 0
    """Bytes of the saved context states held now."""
    restores: int = 0
    """Context prefixes brought back from a saved KV state instead of being evaluated again."""
    candidate_evals: int = 0
    """(text, context) pairs scored."""
    candidate_tokens: int = 0
    """Tokens decoded for them (the last prefix token, the text's tokens and the end)."""
    prefix_s: float = 0.0
    restore_s: float = 0.0
    candidate_s: float = 0.0
    load_s: float = 0.0


@dataclass
class _Context:
    label: str
    examples: list[str]
    tokens: list[int]
    key: str


@dataclass
class _State:
    data: bytes
    n_past: int


def model_spec(config: VerifierConfig, generator: Any = None) -> str:
    """The model the verifier loads: ``config.model``, else the generator backend's model when that backend
    is local (``generator``: a backend config such as :class:`~activesynth.agent.config.llm.LocalConfig`)."""
    if config.model:
        return config.model
    if generator is not None and getattr(generator, "kind", None) == "local":
        return generator.model
    raise BackendError(
        "the likelihood verifier needs a local GGUF model: set verify.model (the generator is not local)"
    )


def decide(ratio: float | None, best_rival: str | None, config: VerifierConfig) -> tuple[str, str | None]:
    """(decision, new label) for a per-token log-ratio: ``keep`` at or above ``config.threshold``; below it
    ``config.verdict``, where ``relabel`` takes ``best_rival`` only when that rival is likelier by at least
    ``relabel_margin`` nats per token (else ``drop``). ``unchecked`` without a ratio."""
    if ratio is None:
        return "unchecked", None
    if ratio >= config.threshold:
        return "keep", None
    if config.verdict == "relabel":
        if best_rival is not None and ratio < 0 and -ratio >= config.relabel_margin:
            return "relabel", best_rival
        return "drop", None
    return config.verdict, None


class _Runtime:
    """A GGUF model, one llama.cpp context (one sequence) and one batch, through llama.cpp's C API.

    Loaded like the local backend's model (CPU, ``n_threads`` for decoding and batches), with two
    differences: ``swa_full`` (see the module docstring) and no repacked weight layouts
    (``use_extra_bufts`` off). Repacked weights make llama.cpp round a little differently depending on how
    many tokens a batch holds, so the same text after the same prefix would score differently when cut into
    other batches (measured: up to 0.4 nats on a 9-token text); without them a text's score does not depend
    on batch shapes, at no cost per candidate and about 15 % more time per prefix (1 thread, Gemma-3-270M).
    """

    _backend_ready = False

    def __init__(self, path: str, n_ctx: int, threads: int | None) -> None:
        import llama_cpp

        self.lib = llama_cpp
        if not _Runtime._backend_ready:
            llama_cpp.llama_backend_init()
            _Runtime._backend_ready = True
        quiet = logging.getLogger("llama-cpp-python")  # llama.cpp's own messages, printed by llama_cpp
        if quiet.level == logging.NOTSET:
            quiet.setLevel(logging.ERROR)
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = 0  # as llama_cpp.Llama loads it for the local backend: on the CPU
        if any(name == "use_extra_bufts" for name, *_ in type(mparams)._fields_):
            mparams.use_extra_bufts = False
        self.model = llama_cpp.llama_model_load_from_file(path.encode("utf-8"), mparams)
        if not self.model:
            raise BackendError(f"llama.cpp could not load {path}")
        threads = threads or max(1, (os.cpu_count() or 2) // 2)
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = _N_BATCH
        cparams.n_ubatch = _N_BATCH
        cparams.n_seq_max = 1
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.swa_full = True
        # as llama_cpp.Llama sets it (llama.cpp's default "auto" turns flash attention on, whose tiles also
        # round differently with the batch shape)
        cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cparams.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            llama_cpp.llama_model_free(self.model)
            raise BackendError(f"llama.cpp could not make a context of {n_ctx} tokens for {path}")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.batch = llama_cpp.llama_batch_init(_N_BATCH, 0, 1)
        self.memory = llama_cpp.llama_get_memory(self.ctx)

    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode("utf-8")
        size = len(data) + 8
        while True:
            buf = (self.lib.llama_token * size)()
            n = self.lib.llama_tokenize(self.vocab, data, len(data), buf, size, add_special, parse_special)
            if n >= 0:
                return list(buf[:n])
            size = -n

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit the bindings may be gone first
            self.close()

    def close(self) -> None:
        lib = self.lib
        if self.batch is not None:
            lib.llama_batch_free(self.batch)
            self.batch = None
        if self.ctx:
            lib.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            lib.llama_model_free(self.model)
            self.model = None


def _readable(label: str) -> str:
    """As the generator's prompts show a label (``synthesize._variables``)."""
    return label.replace("_", " ").replace("-", " ")


class LikelihoodVerifier:
    """Scores texts under label contexts with a local GGUF model (see the module docstring).

    ``examples`` maps a label to real texts of it (train and dev; never the selection split or test); each
    context shows a seeded sample of ``n_examples`` of them. ``task`` is the plan's task line. ``generator``
    (a backend config) supplies the model and thread count when ``config`` leaves them unset.
    """

    def __init__(
        self,
        config: VerifierConfig | None = None,
        *,
        examples: Mapping[str, Sequence[str]],
        task: str = DEFAULT_TASK,
        generator: Any = None,
        template: PromptTemplate | None = None,
    ) -> None:
        self.config = config or VerifierConfig()
        self.spec = model_spec(self.config, generator)
        local = getattr(generator, "kind", None) == "local"
        self.threads = self.config.threads or (generator.threads if local else None)
        self._cache_dir = generator.cache_dir if local else None
        self.task = task.strip().rstrip(".") or DEFAULT_TASK
        self.template = template or get_template(self.config.template)
        if self.template.mode != "completion":
            raise ValueError(f"verify.template: {self.template.ref} is a chat template; completion needed")
        missing = {"task", "label_text", "examples"} - set(self.template.variables)
        if missing:
            raise ValueError(f"verify.template: {self.template.ref} lacks the variables {sorted(missing)}")
        self.examples = {str(k): [str(t) for t in v] for k, v in examples.items() if len(v)}
        self.stats = VerifierStats()
        self.model_id = ""
        self._rt: _Runtime | None = None
        self._contexts: dict[str, _Context | None] = {}
        self._states: OrderedDict[str, _State] = OrderedDict()
        self._resident: str | None = None
        self._sep, self._end = self._item_format()

    # -- lifecycle -------------------------------------------------------------------------------------
    def load(self) -> None:
        """Load the model (first use does this too)."""
        if self._rt is not None:
            return
        from activesynth.agent.llm.local import resolve_model

        source = resolve_model(self.spec, self._cache_dir)
        if source.gguf_path is None:
            raise BackendError(f"the likelihood verifier needs a GGUF model; {self.spec} is not one")
        if not source.gguf_path.exists():
            raise BackendError(f"model file not found: {source.gguf_path}")
        if importlib.util.find_spec("llama_cpp") is None:
            raise BackendError("the likelihood verifier needs the llama_cpp package")
        t0 = time.perf_counter()
        self._rt = _Runtime(str(source.gguf_path), self.config.n_ctx, self.threads)
        self._resident = None
        self.model_id = f"local:{source.name}/{source.gguf_file}"
        self.stats.load_s += time.perf_counter() - t0
        log.info("verifier loaded %s in %.1fs", source.gguf_path, time.perf_counter() - t0)

    @property
    def _runtime(self) -> _Runtime:
        self.load()
        return self._rt

    def close(self) -> None:
        """Free the model, its batch and the saved contexts (a later call loads the model again)."""
        if self._rt is not None:
            self._rt.close()
            self._rt = None
        self._states.clear()
        self.stats.state_bytes = 0
        self._resident = None

    def __enter__(self) -> LikelihoodVerifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- contexts --------------------------------------------------------------------------------------
    def _item_format(self) -> tuple[str, str]:
        """(what goes between the prefix and a text, what ends the text) as the template lays out items,
        found by rendering it with one more example (a sentinel) than the prefix shows."""
        shown = ["first example", "second example"]
        prefix = self._render(shown)
        full = self._render([*shown, _SENTINEL])
        at = full.find(_SENTINEL)
        if at < 0 or not full[:at].startswith(prefix):
            raise ValueError(
                f"verify.template: {self.template.ref} must end where the next example's text begins "
                "(like self_instruct_list)"
            )
        after = full[at + len(_SENTINEL) :]
        return full[len(prefix) : at], ("\n" if after.startswith("\n") else "")

    def _render(self, examples: list[str]) -> str:
        return self.template.render(task=self.task, label_text="{label_text}", examples=examples).prompt or ""

    def context_examples(self, label: str) -> list[str]:
        """The real examples shown in ``label``'s context (a seeded sample; empty for an unknown label)."""
        pool = self.examples.get(label, [])
        if len(pool) <= self.config.n_examples:
            return list(pool)
        seed = hashlib.sha256(f"{self.config.seed}\x1f{label}".encode()).hexdigest()
        return random.Random(seed).sample(pool, self.config.n_examples)

    def context_text(self, label: str) -> str | None:
        """The prefix text of ``label``'s context (``None`` when the label has no examples)."""
        ctx = self._context(label)
        return None if ctx is None else self._prefix_text(label, ctx.examples)

    def _prefix_text(self, label: str, examples: list[str]) -> str:
        return (
            self.template.render(task=self.task, label_text=_readable(label), examples=examples).prompt or ""
        )

    def _context(self, label: str) -> _Context | None:
        if label in self._contexts:
            return self._contexts[label]
        examples = self.context_examples(label)
        ctx = None
        if examples:
            rt = self._runtime
            limit = self.config.n_ctx // 2
            while True:
                text = self._prefix_text(label, examples)
                tokens = rt.tokenize(text, add_special=True, parse_special=True)  # as the generator does
                if len(tokens) <= limit or len(examples) == 1:
                    break
                examples = examples[:-1]
            if len(examples) < len(self.context_examples(label)):
                log.info("context of %s shortened to %d examples to fit n_ctx", label, len(examples))
            digest = hashlib.sha256(np.asarray(tokens, dtype=np.int64).tobytes()).hexdigest()
            ctx = _Context(label=label, examples=examples, tokens=tokens, key=digest)
        self._contexts[label] = ctx
        return ctx

    def text_tokens(self, text: str) -> list[int]:
        """The tokens a text is scored with: the item separator and the text (whitespace collapsed), then the
        end of the item when ``score_end``. Tokenized as plain text (special tokens are not parsed)."""
        rt = self._runtime
        body = " ".join(str(text).split())
        tokens = rt.tokenize(self._sep + body, add_special=False, parse_special=False)
        if self.config.score_end and self._end:
            tokens += rt.tokenize(self._end, add_special=False, parse_special=False)
        return tokens

    # -- llama.cpp -------------------------------------------------------------------------------------
    def _decode(self, tokens: Sequence[int], pos0: int, score_from: int | None) -> float:
        """Decode ``tokens`` at positions ``pos0...`` into sequence 0; with ``score_from``, the summed
        log-probability of ``tokens[score_from + 1:]`` (each given the tokens before it)."""
        rt = self._runtime
        lib, ctx, n_vocab, batch = rt.lib, rt.ctx, rt.n_vocab, rt.batch
        total = 0.0
        for start in range(0, len(tokens), _N_BATCH):
            chunk = tokens[start : start + _N_BATCH]
            rows = []
            batch.n_tokens = len(chunk)
            for i, tok in enumerate(chunk):
                j = start + i
                want = score_from is not None and score_from <= j < len(tokens) - 1
                batch.token[i] = tok
                batch.pos[i] = pos0 + j
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = want
                if want:
                    rows.append(j)
            rc = lib.llama_decode(ctx, batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode failed with code {rc}")
            if rows:
                ptr = lib.llama_get_logits(ctx)
                logits = np.ctypeslib.as_array(ptr, shape=(len(rows) * n_vocab,)).reshape(len(rows), n_vocab)
                total += _sum_logprobs(logits, [tokens[j + 1] for j in rows])
        return total

    def _make_resident(self, context: _Context) -> None:
        """Put ``context``'s prefix (all but its last token) into the KV cache as sequence 0."""
        if self._resident == context.key:
            return
        rt = self._runtime
        lib, ctx, mem = rt.lib, rt.ctx, rt.memory
        lib.llama_memory_clear(mem, True)
        self._resident = None
        n_past = len(context.tokens) - 1
        state = self._states.get(context.key)
        if state is not None:
            t0 = time.perf_counter()
            buf = (ctypes.c_uint8 * len(state.data)).from_buffer_copy(state.data)
            done = lib.llama_state_seq_set_data(ctx, buf, len(state.data), 0)
            if done == len(state.data) and lib.llama_memory_seq_pos_max(mem, 0) == n_past - 1:
                self._states.move_to_end(context.key)
                self.stats.restores += 1
                self.stats.restore_s += time.perf_counter() - t0
                self._resident = context.key
                return
            log.warning("saved context of %s could not be restored; evaluating it again", context.label)
            lib.llama_memory_clear(mem, True)
            del self._states[context.key]
            self.stats.state_bytes -= len(state.data)
        t0 = time.perf_counter()
        if n_past:
            self._decode(context.tokens[:n_past], 0, None)
        self.stats.prefix_evals += 1
        self.stats.prefix_tokens += len(context.tokens)
        self.stats.prefix_s += time.perf_counter() - t0
        size = lib.llama_state_seq_get_size(ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        got = lib.llama_state_seq_get_data(ctx, buf, size, 0)
        if 0 < got <= size:
            self._states[context.key] = _State(data=bytes(buf)[:got], n_past=n_past)
            while len(self._states) > self.config.max_cached_prefixes:
                self._states.popitem(last=False)
            self.stats.state_bytes = sum(len(st.data) for st in self._states.values())
        self._resident = context.key

    def _score_resident(self, context: _Context, tokens: list[int]) -> float:
        """log p(tokens | context), the context being resident; the KV cache is left holding the prefix."""
        rt = self._runtime
        n_past = len(context.tokens) - 1
        t0 = time.perf_counter()
        try:
            lp = self._decode([context.tokens[-1], *tokens], n_past, 0)
        except Exception:
            rt.lib.llama_memory_clear(rt.memory, True)
            self._resident = None
            raise
        rt.lib.llama_memory_seq_rm(rt.memory, 0, n_past, -1)  # back to the prefix alone
        self.stats.candidate_evals += 1
        self.stats.candidate_tokens += len(tokens) + 1
        self.stats.candidate_s += time.perf_counter() - t0
        return lp

    def _fits(self, context: _Context, tokens: list[int]) -> bool:
        return len(context.tokens) + len(tokens) <= self.config.n_ctx

    # -- scoring ---------------------------------------------------------------------------------------
    def logprob(self, text: str, label: str) -> float:
        """``log p(text | context of label)`` (nats), through the cached prefix state."""
        ctx = self._require_context(label)
        tokens = self.text_tokens(text)
        if not self._fits(ctx, tokens):
            raise ValueError(f"text of {len(tokens)} tokens does not fit after the context of {label}")
        self._make_resident(ctx)
        return self._score_resident(ctx, tokens)

    def logprob_uncached(self, text: str, label: str, split: bool = False) -> float:
        """The same as :meth:`logprob` from an empty cache, no state reused or kept: the reference that the
        cached path must equal. ``split=False`` evaluates prefix and text in one pass; the CPU kernels round
        a little differently for other batch shapes, so it agrees to about 0.01 nats per token.
        ``split=True`` evaluates the prefix without its last token first, then the rest, as the cached path
        does (the same batches): bit-identical when saving, restoring and truncating states are right."""
        ctx = self._require_context(label)
        tokens = self.text_tokens(text)
        if not self._fits(ctx, tokens):
            raise ValueError(f"text of {len(tokens)} tokens does not fit after the context of {label}")
        rt = self._runtime
        rt.lib.llama_memory_clear(rt.memory, True)
        self._resident = None
        try:
            if split:
                n_past = len(ctx.tokens) - 1
                self._decode(ctx.tokens[:n_past], 0, None)
                return self._decode([ctx.tokens[-1], *tokens], n_past, 0)
            return self._decode([*ctx.tokens, *tokens], 0, len(ctx.tokens) - 1)
        finally:
            rt.lib.llama_memory_clear(rt.memory, True)

    def _require_context(self, label: str) -> _Context:
        ctx = self._context(label)
        if ctx is None:
            raise ValueError(f"no examples of label {label!r} for its context")
        return ctx

    def verify(self, items: Sequence[VerifyItem]) -> list[Verification]:
        """One :class:`Verification` per item, in order. All (text, context) pairs of the call are scored
        grouped by context, so each context is made resident once; a pair that repeats is scored once."""
        t0 = time.perf_counter()
        evals0 = self.stats.candidate_evals
        out = [Verification(id=it.id, text=it.text, label=it.label) for it in items]
        wanted: dict[str, list[int]] = {}  # context label -> indices of the items scored under it
        labels_of: dict[int, tuple[str, ...]] = {}  # item index -> (own label, rivals...)
        tokens_of: dict[int, list[int]] = {}
        for i, (item, res) in enumerate(zip(items, out, strict=True)):
            if not str(item.text).strip():
                res.error, res.reason = "empty text", "unchecked: empty text"
                continue
            if self._context(item.label) is None:
                res.reason = f"unchecked: no examples of {item.label}"
                continue
            rivals = [r for r in dict.fromkeys(item.rivals) if r != item.label and self._context(r)]
            rivals = rivals[: self.config.rivals]
            if not rivals:
                res.reason = "unchecked: no rival label with examples"
                continue
            tokens_of[i] = self.text_tokens(item.text)
            res.n_tokens = len(tokens_of[i])
            labels_of[i] = (item.label, *rivals)
            for label in labels_of[i]:
                wanted.setdefault(label, []).append(i)
        scores: dict[tuple[str, str], float | str] = {}  # (text key, context label) -> logprob or error
        for label in sorted(wanted):
            context = self._contexts[label]
            for i in wanted[label]:
                key = (" ".join(str(items[i].text).split()), label)
                if key in scores:
                    continue
                if not self._fits(context, tokens_of[i]):
                    n, m = len(tokens_of[i]), len(context.tokens)
                    scores[key] = f"too long: {n} tokens after a context of {m} (n_ctx {self.config.n_ctx})"
                    continue
                try:
                    self._make_resident(context)
                    scores[key] = self._score_resident(context, tokens_of[i])
                except Exception as exc:  # noqa: BLE001 - recorded on the item, the others go on
                    scores[key] = f"{type(exc).__name__}: {exc}"
        for i, (item, res) in enumerate(zip(items, out, strict=True)):
            if i not in labels_of:
                continue
            text_key = " ".join(str(item.text).split())
            own = scores.get((text_key, item.label))
            if isinstance(own, str):
                res.error, res.reason = own, f"unchecked: {own}"
                continue
            res.logprob = own
            for label in labels_of[i][1:]:
                value = scores.get((text_key, label))
                if isinstance(value, float):
                    res.rival_logprobs[label] = value
            if not res.rival_logprobs:
                res.reason = "unchecked: no rival could be scored"
                continue
            res.best_rival = max(res.rival_logprobs, key=res.rival_logprobs.get)
            res.ratio = (own - res.rival_logprobs[res.best_rival]) / res.n_tokens
            res.decision, res.relabel = decide(res.ratio, res.best_rival, self.config)
            res.reason = (
                f"{res.decision}: log-ratio {res.ratio:+.3f}/token over {res.best_rival} "
                f"(own {res.per_token:.2f}, rival {res.rival_per_token[res.best_rival]:.2f}; "
                f"threshold {self.config.threshold:+.2f})"
            )
        _log_summary(out, self.stats.candidate_evals - evals0, time.perf_counter() - t0, self.model_id)
        return out


def _sum_logprobs(logits: np.ndarray, targets: Sequence[int]) -> float:
    """Sum over rows of ``log softmax(row)[target]`` (float32 exponentials, float64 sums)."""
    top = logits.max(axis=1, keepdims=True)
    shifted = logits - top
    norm = np.log(np.exp(shifted).sum(axis=1, dtype=np.float64))
    picked = shifted[np.arange(len(targets)), np.asarray(targets)].astype(np.float64)
    return float((picked - norm).sum())


def _log_summary(results: list[Verification], evals: int, seconds: float, model: str) -> None:
    if not results:
        return
    counts: dict[str, int] = {}
    for r in results:
        counts[r.decision] = counts.get(r.decision, 0) + 1
    log.info(
        "likelihood verifier (%s): %d texts, %s; %d (text, context) passes in %.1fs",
        model,
        len(results),
        ", ".join(f"{n} {d}" for d, n in sorted(counts.items())),
        evals,
        seconds,
    )
