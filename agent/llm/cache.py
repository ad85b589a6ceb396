"""SQLite (WAL) cache of LLM calls, and a wrapper that puts it in front of any backend.

Key: sha256 of the canonical request (model, prompt or messages, sampling, template version, sample index, the
allowed choices where a request has them); it never contains a secret. Value: JSON of the sample (text, finish
reason, token counts, and the choices' log-probabilities where the backend gave them). Only successful
samples are stored, so a re-run retries failures and makes no call for anything already answered; results are
written as they arrive, so a killed generation resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from activesynth.agent.llm.protocol import GenerationRequest, OnResult, Result
from activesynth.agent.llm.usage import UsageMeter
from activesynth.agent.sqlite_pool import SharedConnection, acquire

__all__ = ["CachedBackend", "LLMCache"]

log = logging.getLogger(__name__)


class LLMCache:
    """A key → JSON store in one SQLite file in WAL mode; safe to share between threads.

    The file (and its folder) is created on the first :meth:`put`, so an object that is never written to
    leaves nothing behind; reads of a file that does not exist yet are misses. All objects on one file in a
    process share one connection (:mod:`activesynth.agent.sqlite_pool`); :meth:`close` gives this object's
    use back.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: SharedConnection | None = None
        self._closed = False

    def _connection(self, create: bool) -> SharedConnection | None:
        """The shared connection, opened on first need; ``None`` when reading a file that does not exist."""
        with self._lock:
            if self._closed:
                raise ValueError(f"LLM cache {self.path} is closed")
            if self._conn is not None and (self._conn.pid != os.getpid() or self._conn.closed):
                self._conn = None  # made before a fork (the child opens its own) or closed by close_all
            if self._conn is None:
                if not create and not self.path.exists():
                    return None
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = acquire(self.path, timeout=30)
                with conn.lock:
                    conn.db.execute(
                        "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, model TEXT, "
                        "value TEXT NOT NULL, created REAL NOT NULL)"
                    )
                    conn.db.commit()
                self._conn = conn
            return self._conn

    def get(self, key: str) -> dict | None:
        conn = self._connection(create=False)
        if conn is None:
            return None
        with conn.lock:
            row = conn.db.execute("SELECT value FROM calls WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, model: str, value: dict) -> None:
        conn = self._connection(create=True)
        assert conn is not None
        with conn.lock:
            conn.db.execute(
                "INSERT OR REPLACE INTO calls (key, model, value, created) VALUES (?, ?, ?, ?)",
                (key, model, json.dumps(value, ensure_ascii=False), time.time()),
            )
            conn.db.commit()

    def __len__(self) -> int:
        conn = self._connection(create=False)
        if conn is None:
            return 0
        with conn.lock:
            return conn.db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def close(self) -> None:
        """Give this object's use of the shared connection back (the last user's close closes it)."""
        with self._lock:
            conn, self._conn, self._closed = self._conn, None, True
        if conn is not None:
            conn.release()


class CachedBackend:
    """Answers from the cache where it can and sends only the missing samples to ``backend``.

    Usage is recorded in ``meter`` under ``stage``: calls, requests, retries and tokens for fresh samples,
    cache hits otherwise. ``context_size``, ``count_tokens`` and ``count_request_tokens`` are the wrapped
    backend's (``None`` when it has none).
    """

    def __init__(self, backend, cache: LLMCache, meter: UsageMeter | None = None, stage: str = "generate"):
        self.backend = backend
        self.cache = cache
        self.meter = meter or UsageMeter()
        self.stage = stage
        self.name = backend.name
        self.model_id = backend.model_id

    def check(self) -> None:
        self.backend.check()

    def close(self) -> None:
        self.backend.close()

    # the wrapped backend's context API (see LocalBackend); None where the backend does not know
    @property
    def context_size(self) -> int | None:
        return getattr(self.backend, "context_size", None)

    def count_tokens(self, text: str) -> int | None:
        count = getattr(self.backend, "count_tokens", None)
        return count(text) if count is not None else None

    def count_request_tokens(self, request: GenerationRequest) -> int | None:
        count = getattr(self.backend, "count_request_tokens", None)
        return count(request) if count is not None else None

    def generate(self, requests: list[GenerationRequest], on_result: OnResult | None = None) -> list[Result]:
        done: dict[tuple[str, int], Result] = {}
        todo: list[GenerationRequest] = []
        by_id = {r.id: r for r in requests}
        for req in requests:
            missing = []
            for i in req.sample_indices():
                hit = self.cache.get(req.cache_key(self.model_id, i))
                if hit is None:
                    missing.append(i)
                    continue
                res = Result(
                    request_id=req.id,
                    sample_index=i,
                    text=hit["text"],
                    finish_reason=hit.get("finish_reason"),
                    prompt_tokens=hit.get("prompt_tokens", 0),
                    completion_tokens=hit.get("completion_tokens", 0),
                    cached=True,
                    choice_logprobs=hit.get("choice_logprobs"),
                )
                done[(req.id, i)] = res
                self.meter.record(self.stage, self.model_id, cache_hits=1)
                if on_result:
                    on_result(req, res)
            todo.extend(_split_missing(req, missing))
        if todo:
            log.info(
                "%d samples cached, %d to generate with %s", len(done), sum(r.n for r in todo), self.model_id
            )

            def store(sub: GenerationRequest, res: Result) -> None:
                parent = by_id[sub.id]
                if res.ok:
                    self.cache.put(
                        parent.cache_key(self.model_id, res.sample_index),
                        self.model_id,
                        {
                            "text": res.text,
                            "finish_reason": res.finish_reason,
                            "prompt_tokens": res.prompt_tokens,
                            "completion_tokens": res.completion_tokens,
                            # only for requests with choices, so other entries stay as they were
                            **({"choice_logprobs": res.choice_logprobs} if res.choice_logprobs else {}),
                        },
                    )
                self.meter.record(
                    self.stage,
                    self.model_id,
                    calls=res.attempts,
                    # backends with transport retries (openai) say how many requests the calls took
                    requests=getattr(res, "requests", res.attempts),
                    output_retries=getattr(res, "output_retries", 0),
                    prompt_tokens=res.prompt_tokens,
                    completion_tokens=res.completion_tokens,
                    seconds=res.seconds,
                    failures=0 if res.ok else 1,
                )
                done[(res.request_id, res.sample_index)] = res
                if on_result:
                    on_result(parent, res)

            self.backend.generate(todo, on_result=store)
        out = []
        for req in requests:
            for i in req.sample_indices():
                res = done.get((req.id, i))
                if res is None:  # a backend that skipped a sample: record it, never drop it silently
                    res = Result(request_id=req.id, sample_index=i, error="no result from backend")
                out.append(res)
        return out


def _split_missing(req: GenerationRequest, missing: list[int]) -> list[GenerationRequest]:
    """Contiguous runs of missing sample indices become sub-requests (same id, same cache keys)."""
    from dataclasses import replace

    runs: list[list[int]] = []
    for i in missing:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return [replace(req, first_sample=r[0], n=len(r)) for r in runs]
