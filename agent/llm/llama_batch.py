"""Many sequences of one llama.cpp model decoded together: continuous batching with shared prompt prefixes.

One-stream decoding reads every weight once per generated token; on a CPU that is memory-bound for the small
models we ship, so decoding several sequences in one ``llama_decode`` call costs little more than one.
:class:`BatchDecoder` keeps up to ``parallel`` sequences ("slots") in flight in a second llama.cpp context on
the same weights (llama-cpp-python's low-level API), refills a slot as soon as its sequence ends, and
evaluates a new prompt only past the longest token prefix it shares with a sequence already in the KV cache:
that prefix's cells are shared (``llama_memory_seq_cp`` in a unified KV cache adds a sequence id to the cells,
no copy), so the few-shot block that the samples of a request, and often neighbouring requests, have in
common is evaluated once.

Sampling mirrors llama-cpp-python's ``create_completion`` chain (repeat penalty over the last 64 tokens,
top-k 40, typical 1.0, top-p, min-p 0.05, temperature, then a seeded draw; greedy at temperature 0) with one
seeded sampler per sequence, so a sample depends on its own seed and prompt, not on which other sequences
share the batch. Results are reproducible run to run with the same plan; they are not bit-identical to
one-stream decoding (matrix products over a batch sum in another order, which can flip a near-tie token).

Requests with single-token ``choices`` (the judge's letters) need one forward pass: the answer is the most
likely choice (temperature 0) or a seeded draw among the choices, and every choice's log-probability over the
whole vocabulary is reported, as the one-stream path does.

The KV cache holds ``n_ctx`` cells for all slots together. A slot is admitted only when the cells that the
sequences in flight could still need (their prompts plus ``max_tokens``, counted without the sharing, so an
upper bound) leave room for it, and a slot whose decode finds no room is put back at the front of the queue.
Gemma-3's sliding-window layers keep a full-size cache (``swa_full``), so a copied prefix is never one whose
early cells the window already dropped.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["BatchDecoder", "DecodeStats", "Finished", "Job"]

_PENALTY_LAST_N = 64  # llama-cpp-python's default last_n_tokens_size
_TOP_K = 40  # create_completion's defaults
_MIN_P = 0.05
_SHARE_MIN = (
    16  # a prompt waits one decode step for a sequence about to evaluate this many more shared tokens
)


@dataclass
class Job:
    """One sample to decode: prompt tokens, limits and sampling. ``key`` comes back in :class:`Finished`.

    ``choices`` maps token ids to the choice each spells (single-token choices); such a job makes one
    forward pass and answers with a choice.
    """

    key: Any
    tokens: list[int]
    max_tokens: int
    stop: tuple[str, ...] = ()
    temperature: float = 0.8
    top_p: float = 0.95
    repeat_penalty: float = 1.0
    seed: int = 0
    choices: dict[int, str] | None = None


@dataclass
class Finished:
    """What a job produced. ``seconds`` is its share of the decode calls it took part in (shares of one batch
    add up to the batch's wall time, so summing over jobs gives the wall time, not a multiple of it)."""

    key: Any
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    prompt_tokens_evaluated: int
    choice_logprobs: dict[str, float] | None = None


@dataclass
class DecodeStats:
    """Counters of one :meth:`BatchDecoder.run`."""

    jobs: int = 0
    prompt_tokens: int = 0
    prompt_tokens_evaluated: int = 0
    completion_tokens: int = 0
    decode_calls: int = 0
    requeued: int = 0
    seconds: float = 0.0
    max_parallel: int = 0

    @property
    def prompt_reuse(self) -> float:
        """Share of prompt tokens taken from the KV cache instead of evaluated."""
        return 1 - self.prompt_tokens_evaluated / self.prompt_tokens if self.prompt_tokens else 0.0


@dataclass
class _Slot:
    job: Job
    pending: list[int]  # prompt tokens still to evaluate
    sampler: Any = None
    next_token: int | None = None  # sampled, not yet evaluated
    out_tokens: list[int] = field(default_factory=list)
    out_bytes: bytearray = field(default_factory=bytearray)
    evaluated: int = 0
    seconds: float = 0.0
    batch_index: int = -1  # where this slot's logits are in the current batch (-1: none)
    in_batch: int = 0  # tokens of this slot in the current batch
    batch_token: int | None = None  # the output token this slot evaluates in the current batch
    batch_chunk: list[int] = field(default_factory=list)  # the prompt tokens it evaluates there

    def need(self) -> int:
        """Cells this slot may still add to the KV cache."""
        return len(self.pending) + self.job.max_tokens - len(self.out_tokens)


class BatchDecoder:
    """Decodes :class:`Job` s in batches on the weights of a loaded ``llama_cpp.Llama`` (module docstring).

    ``parallel`` sequences at most are in flight; ``n_ctx`` is the KV cache shared by all of them (at least
    the longest job's prompt plus ``max_tokens``); ``n_batch`` the most tokens one decode call takes.
    """

    def __init__(
        self, llama, parallel: int = 8, n_ctx: int = 8192, threads: int | None = None, n_batch: int = 512
    ) -> None:
        import llama_cpp as lc

        self._lc = lc
        self.parallel = parallel
        self.n_batch = n_batch
        self._model = llama._model.model
        self._vocab = lc.llama_model_get_vocab(self._model)
        self.n_vocab = lc.llama_vocab_n_tokens(self._vocab)
        params = lc.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = parallel
        params.kv_unified = True
        params.swa_full = True
        params.no_perf = True
        # as llama-cpp-python's Llama (flash attention off): the same numbers as one-stream decoding, within
        # rounding; llama.cpp's "auto" turns it on for the CPU and moved choice log-probabilities by ~0.3
        params.flash_attn_type = lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
        if threads:
            params.n_threads = params.n_threads_batch = threads
        else:  # what the one-stream Llama uses
            params.n_threads = llama.context_params.n_threads
            params.n_threads_batch = llama.context_params.n_threads_batch
        self._ctx = lc.llama_init_from_model(self._model, params)
        if not self._ctx:
            raise RuntimeError(f"llama.cpp made no context of {n_ctx} tokens for {parallel} sequences")
        self.n_ctx = lc.llama_n_ctx(self._ctx)
        self._mem = lc.llama_get_memory(self._ctx)
        self._batch = lc.llama_batch_init(n_batch, 0, parallel)
        self._piece = ctypes.create_string_buffer(256)
        # what each sequence id holds in the KV cache (prompt and evaluated output tokens), for prefix reuse
        self._kv: list[list[int]] = [[] for _ in range(parallel)]

    def close(self) -> None:
        lc = self._lc
        if self._batch is not None:
            lc.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx:
            lc.llama_free(self._ctx)
            self._ctx = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        with contextlib.suppress(Exception):
            self.close()

    # -- the scheduler ---------------------------------------------------------------------------------
    def run(self, jobs: Iterable[Job], on_done: Callable[[Finished], None]) -> DecodeStats:
        """Decode every job, calling ``on_done`` as each finishes (in finishing order)."""
        lc = self._lc
        queue = deque(jobs)
        stats = DecodeStats(jobs=len(queue))
        slots: list[_Slot | None] = [None] * self.parallel
        t_run = time.perf_counter()
        try:
            while queue or any(slots):
                self._admit(queue, slots, stats)
                stats.max_parallel = max(stats.max_parallel, sum(1 for s in slots if s))
                n = self._fill_batch(slots)
                t0 = time.perf_counter()
                ret = lc.llama_decode(self._ctx, self._batch)
                step = time.perf_counter() - t0
                stats.decode_calls += 1
                if ret == 1:  # no room in the KV cache
                    self._make_room(queue, slots, stats)
                    continue
                if ret != 0:
                    raise RuntimeError(f"llama_decode failed with status {ret}")
                for sid, slot in enumerate(slots):
                    if slot is None:
                        continue
                    slot.seconds += step * slot.in_batch / n
                    self._after_decode(sid, slot, slots, on_done, stats)
        finally:
            for slot in slots:
                if slot is not None and slot.sampler:
                    lc.llama_sampler_free(slot.sampler)
            lc.llama_memory_clear(self._mem, True)
            self._kv = [[] for _ in range(self.parallel)]
        stats.seconds = time.perf_counter() - t_run
        return stats

    def _reserved(self, slots: list[_Slot | None]) -> int:
        """Cells in use or promised (sharing not counted: an upper bound)."""
        held = sum(len(kv) for kv in self._kv)
        return held + sum(s.need() for s in slots if s is not None)

    def _admit(self, queue: deque, slots: list[_Slot | None], stats: DecodeStats) -> None:
        lc = self._lc
        while queue and None in slots:
            job = queue[0]
            size = len(job.tokens) + job.max_tokens
            # free the cache of idle sequence ids (kept for prefix reuse) until the job fits
            idle = [i for i, s in enumerate(slots) if s is None and self._kv[i]]
            while self._reserved(slots) + size > self.n_ctx and idle:
                i = max(idle, key=lambda k: len(self._kv[k]))
                idle.remove(i)
                lc.llama_memory_seq_rm(self._mem, i, -1, -1)
                self._kv[i] = []
            if self._reserved(slots) + size > self.n_ctx and any(slots):
                return  # wait for a sequence to finish
            if self._wait_for_prefix(job, slots):
                return  # a sequence about to evaluate this prompt's prefix: share it next step instead
            queue.popleft()
            sid = self._pick_slot(job, slots)
            slots[sid] = self._start(sid, job, slots)
            stats.prompt_tokens += len(job.tokens)

    def _wait_for_prefix(self, job: Job, slots: list[_Slot | None]) -> bool:
        """True when a sequence in flight has yet to evaluate a prefix of ``job``'s prompt that is at least
        ``_SHARE_MIN`` tokens longer than the best prefix already in the cache (the samples of one request,
        admitted together, would otherwise each evaluate the same prompt)."""
        cached = max((_common(kv, job.tokens) for kv in self._kv), default=0)
        return any(
            slot is not None and slot.pending and _common(slot.job.tokens, job.tokens) >= cached + _SHARE_MIN
            for slot in slots
        )

    def _pick_slot(self, job: Job, slots: list[_Slot | None]) -> int:
        """The free sequence id whose cached tokens share the longest prefix with the job's prompt."""
        free = [i for i, s in enumerate(slots) if s is None]
        return max(free, key=lambda i: (_common(self._kv[i], job.tokens), -i))

    def _start(self, sid: int, job: Job, slots: list[_Slot | None]) -> _Slot:
        lc = self._lc
        # the longest prefix of the prompt already in the cache, in this sequence or another one
        best, src = _common(self._kv[sid], job.tokens), sid
        for other, kv in enumerate(self._kv):
            if other != sid and kv:
                c = _common(kv, job.tokens)
                if c > best:
                    best, src = c, other
        keep = min(best, len(job.tokens) - 1)  # the last prompt token is evaluated for its logits
        if src == sid and keep > 0 and lc.llama_memory_seq_rm(self._mem, sid, keep, -1):
            self._kv[sid] = self._kv[sid][:keep]
        else:
            lc.llama_memory_seq_rm(self._mem, sid, -1, -1)
            self._kv[sid] = []
            if src != sid and keep > 0:
                lc.llama_memory_seq_cp(self._mem, src, sid, 0, keep)
                self._kv[sid] = job.tokens[:keep]
        keep = len(self._kv[sid])
        return _Slot(job=job, pending=list(job.tokens[keep:]), sampler=self._sampler(job))

    def _fill_batch(self, slots: list[_Slot | None]) -> int:
        """Every decoding slot's next token first, then prompt chunks up to ``n_batch`` tokens."""
        b = self._batch
        n = 0

        def add(token: int, pos: int, sid: int, logits: bool) -> None:
            nonlocal n
            b.token[n] = token
            b.pos[n] = pos
            b.n_seq_id[n] = 1
            b.seq_id[n][0] = sid
            b.logits[n] = logits
            n += 1

        for sid, slot in enumerate(slots):
            if slot is None:
                continue
            slot.in_batch = 0
            slot.batch_index = -1
            slot.batch_token = slot.next_token
            slot.batch_chunk = []
            if slot.next_token is not None:
                slot.batch_index = n
                add(slot.next_token, len(self._kv[sid]), sid, True)
                self._kv[sid].append(slot.next_token)
                slot.next_token = None
                slot.in_batch = 1
        for sid, slot in enumerate(slots):
            if slot is None or not slot.pending or n >= self.n_batch:
                continue
            take = min(len(slot.pending), self.n_batch - n)
            chunk, slot.pending = slot.pending[:take], slot.pending[take:]
            for k, token in enumerate(chunk):
                last = not slot.pending and k == take - 1
                if last:
                    slot.batch_index = n
                add(token, len(self._kv[sid]), sid, last)
                self._kv[sid].append(token)
            slot.evaluated += take
            slot.in_batch += take
            slot.batch_chunk = chunk
        b.n_tokens = n
        return n

    def _make_room(self, queue: deque, slots: list[_Slot | None], stats: DecodeStats) -> None:
        """After a decode that found no room: undo the batch's bookkeeping (nothing reached the cache), then
        free the idle sequences' cells, or else put the longest sequence in flight back first in line."""
        lc = self._lc
        for sid, slot in enumerate(slots):
            if slot is not None:
                self._undo_batch(sid, slot)
        idle = [i for i, s in enumerate(slots) if s is None and self._kv[i]]
        if idle:
            for i in idle:
                lc.llama_memory_seq_rm(self._mem, i, -1, -1)
                self._kv[i] = []
            return
        live = [i for i, s in enumerate(slots) if s is not None]
        if len(live) <= 1:
            raise RuntimeError(f"llama.cpp found no room for one sequence in a {self.n_ctx}-token cache")
        sid = max(live, key=lambda i: len(self._kv[i]) + slots[i].need())
        slot = slots[sid]
        lc.llama_memory_seq_rm(self._mem, sid, -1, -1)
        self._kv[sid] = []
        lc.llama_sampler_free(slot.sampler)
        slots[sid] = None
        stats.prompt_tokens -= len(slot.job.tokens)
        stats.requeued += 1
        queue.appendleft(slot.job)

    def _undo_batch(self, sid: int, slot: _Slot) -> None:
        """Forget what :meth:`_fill_batch` queued for this slot (the decode that was to take it failed)."""
        if slot.in_batch:
            del self._kv[sid][-slot.in_batch :]
        if slot.batch_token is not None:
            slot.next_token = slot.batch_token
        if slot.batch_chunk:
            slot.pending = slot.batch_chunk + slot.pending
            slot.evaluated -= len(slot.batch_chunk)
        slot.in_batch, slot.batch_index, slot.batch_token, slot.batch_chunk = 0, -1, None, []

    def _after_decode(self, sid, slot: _Slot, slots, on_done, stats: DecodeStats) -> None:
        lc = self._lc
        if slot.batch_index < 0:  # a prompt chunk that is not the last: nothing to sample yet
            return
        job = slot.job
        if job.choices:
            text, logprobs = self._choose(slot)
            self._finish(sid, slot, slots, on_done, stats, text, "stop", logprobs)
            return
        token = lc.llama_sampler_sample(slot.sampler, self._ctx, slot.batch_index)
        if lc.llama_vocab_is_eog(self._vocab, token):
            self._finish(sid, slot, slots, on_done, stats, self._text(slot), "stop")
            return
        slot.out_tokens.append(token)
        slot.out_bytes += self._piece_of(token)
        text = self._text(slot)
        if job.stop:
            cut = min((text.find(s) for s in job.stop if s and s in text), default=-1)
            if cut >= 0:
                self._finish(sid, slot, slots, on_done, stats, text[:cut], "stop")
                return
        if len(slot.out_tokens) >= job.max_tokens:
            self._finish(sid, slot, slots, on_done, stats, text, "length")
            return
        slot.next_token = token

    def _finish(self, sid, slot: _Slot, slots, on_done, stats: DecodeStats, text, reason, logprobs=None):
        self._lc.llama_sampler_free(slot.sampler)
        slot.sampler = None
        slots[sid] = None
        stats.completion_tokens += len(slot.out_tokens)
        stats.prompt_tokens_evaluated += slot.evaluated
        on_done(
            Finished(
                key=slot.job.key,
                text=text,
                finish_reason=reason,
                prompt_tokens=len(slot.job.tokens),
                completion_tokens=len(slot.out_tokens) if not slot.job.choices else 1,
                seconds=slot.seconds,
                prompt_tokens_evaluated=slot.evaluated,
                choice_logprobs=logprobs,
            )
        )

    # -- sampling --------------------------------------------------------------------------------------
    def _sampler(self, job: Job):
        if job.choices:
            return None
        lc = self._lc
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        add = lc.llama_sampler_chain_add
        rp = job.repeat_penalty
        add(chain, lc.llama_sampler_init_penalties(self.n_vocab, _PENALTY_LAST_N, rp, 0.0, 0.0))
        if job.temperature <= 0:
            add(chain, lc.llama_sampler_init_greedy())
            return chain
        add(chain, lc.llama_sampler_init_top_k(_TOP_K))
        add(chain, lc.llama_sampler_init_typical(1.0, 1))
        add(chain, lc.llama_sampler_init_top_p(job.top_p, 1))
        add(chain, lc.llama_sampler_init_min_p(_MIN_P, 1))
        add(chain, lc.llama_sampler_init_temp(job.temperature))
        add(chain, lc.llama_sampler_init_dist(job.seed & 0xFFFFFFFF))
        return chain

    def _choose(self, slot: _Slot) -> tuple[str, dict[str, float]]:
        """The answer among single-token choices and each choice's log-probability over the vocabulary."""
        import numpy as np

        ptr = self._lc.llama_get_logits_ith(self._ctx, slot.batch_index)
        x = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float64)
        top = x.max()
        norm = top + math.log(np.exp(x - top).sum())
        logprobs: dict[str, float] = {}
        for token, choice in slot.job.choices.items():
            lp = float(x[token] - norm)
            logprobs[choice] = float(np.logaddexp(logprobs[choice], lp)) if choice in logprobs else lp
        names = list(logprobs)
        if slot.job.temperature <= 0:
            return max(names, key=lambda c: logprobs[c]), logprobs
        scaled = [logprobs[c] / slot.job.temperature for c in names]
        m = max(scaled)
        weights = [math.exp(s - m) for s in scaled]
        return random.Random(slot.job.seed).choices(names, weights)[0], logprobs

    def _piece_of(self, token: int) -> bytes:
        n = self._lc.llama_token_to_piece(self._vocab, token, self._piece, len(self._piece), 0, False)
        if n < 0:  # a piece longer than the buffer
            buf = ctypes.create_string_buffer(-n)
            n = self._lc.llama_token_to_piece(self._vocab, token, buf, -n, 0, False)
            return buf.raw[:n]
        return self._piece.raw[:n]

    @staticmethod
    def _text(slot: _Slot) -> str:
        return bytes(slot.out_bytes).decode("utf-8", errors="ignore")


def _common(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of two token lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
