"""OpenAI-compatible backend (OpenAI, vLLM server, llama.cpp server, …) through the official async SDK.

The key comes from an environment variable only (``api_key_env``, default ``OPENAI_API_KEY``). A variable the
user named that is not set stops the backend with one line before any work; when the default variable is
unset, a server on loopback is sent no key (the SDK's required value is the obvious non-secret ``no-key``,
which the log says once) and any other server stops with one line.

Transport errors (timeouts, 429, 5xx, dropped connections) are retried by the SDK with backoff, the
``GET /models`` preflight included; unusable answers (malformed JSON, no choices, empty text) get
``output_retries`` more tries, and a warning counts them. A request that still fails becomes a
:class:`Result` with ``error`` set and the run goes on.

Accounting: every HTTP request the SDK sends is counted (an ``httpx`` request hook), so each call group's
results say how many logical calls it made (``attempts``), how many HTTP requests those took
(``requests``, transport retries included) and how many calls re-asked after an unusable answer or a
failure the SDK gave up on (``output_retries``); :class:`~activesynth.agent.llm.cache.CachedBackend`
records all three in ``usage.json``. The preflight is not a model call and is not counted.

Requests with ``choices`` (a multiple-choice answer) ask for the answer's log-probabilities (chat:
``logprobs`` with the top ``CHOICE_TOP_LOGPROBS``; completion: ``logprobs=COMPLETION_TOP_LOGPROBS``, OpenAI's
limit there) and report the choices among them in ``Result.choice_logprobs``. A server can also constrain the
answer itself: name the key in ``extra_body`` and its value is filled in per request, ``guided_choice`` (vLLM)
with the list of choices, ``structured_outputs`` (vLLM 0.11 and later) with ``{"choice": [...]}``, ``grammar``
(llama.cpp servers) with a GBNF grammar of them; on requests without choices these keys are left out when
their value is ``true`` (the placeholder), so one config serves the generator and the judge.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import os
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from activesynth.agent.config.llm import DEFAULT_KEY_ENV, OpenAIConfig
from activesynth.agent.llm.protocol import BackendError, GenerationRequest, OnResult, Result, choice_grammar

__all__ = ["DEFAULT_KEY_ENV", "NO_KEY", "OpenAIBackend", "OpenAIConfig", "OpenAIResult"]

log = logging.getLogger(__name__)
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}
NO_KEY = "no-key"  # what the SDK is given when no key is sent: an obvious non-secret, never a real key
_told_no_key: set[str] = set()  # servers already told about in the log (once per process)

# HTTP requests sent by the SDK within the current call (one box per call, set in the calling task)
_REQUESTS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("_REQUESTS", default=None)


async def _count_request(request) -> None:
    """httpx request hook: one more HTTP request (first try or SDK retry) for the call in this task."""
    box = _REQUESTS.get()
    if box is not None:
        box[0] += 1


@dataclass
class OpenAIResult(Result):
    """A :class:`Result` that also carries transport accounting; like ``attempts``, it is set on the first
    result of a call group and 0 on the others, so sums over results are exact."""

    requests: int = 0
    """HTTP requests sent for the group: ``attempts`` logical calls plus the SDK's transport retries."""
    output_retries: int = 0
    """Calls of the group that asked again after an unusable answer (empty, malformed, no choices) or a
    failure the SDK's own retries gave up on."""


class _Throttle:
    """RPM/TPM limits over a sliding 60-second window."""

    def __init__(self, rpm: int | None, tpm: int | None) -> None:
        self.rpm, self.tpm = rpm, tpm
        self.events: deque[tuple[float, int]] = deque()
        self.lock = asyncio.Lock()

    async def wait(self, tokens: int) -> None:
        if not self.rpm and not self.tpm:
            return
        async with self.lock:
            while True:
                now = time.monotonic()
                while self.events and now - self.events[0][0] >= 60:
                    self.events.popleft()
                used = sum(t for _, t in self.events)
                ok_r = not self.rpm or len(self.events) < self.rpm
                ok_t = not self.tpm or used + tokens <= self.tpm or not self.events
                if ok_r and ok_t:
                    self.events.append((now, tokens))
                    return
                await asyncio.sleep(max(0.01, 60 - (now - self.events[0][0])))


class OpenAIBackend:
    """Requests to an OpenAI-compatible server (see module docstring)."""

    name = "openai"

    def __init__(self, config: OpenAIConfig) -> None:
        self.config = config
        self.base_url = config.resolved_base_url()
        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        # no credentials or query in ids, logs or cache keys
        self._safe_url = (
            f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}".rstrip("/")
        )
        self.model_id = f"openai:{self._safe_url}/{config.model}"
        key = os.environ.get(config.api_key_env)
        if not key:
            if config.api_key_env != DEFAULT_KEY_ENV:
                raise BackendError(
                    f"no API key: set the environment variable {config.api_key_env} "
                    "(named by --api-key-env / api_key_env; it is not set)"
                )
            if host not in _LOOPBACK:
                raise BackendError(f"no API key: set the environment variable {config.api_key_env}")
            key = NO_KEY
            if self._safe_url not in _told_no_key:
                _told_no_key.add(self._safe_url)
                log.warning(
                    "$%s is not set: no API key is sent to the loopback server at %s (the SDK gets the "
                    "placeholder %r); name a variable with --api-key-env if the server needs one",
                    DEFAULT_KEY_ENV,
                    self._safe_url,
                    NO_KEY,
                )
        self._key = key
        self._checked = False
        self._n_ignored = False
        self._empty = _EmptyCounts()

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIBackend(model={self.config.model!r}, base_url={self._safe_url!r})"

    def _client(self):
        try:
            import openai
        except ImportError as exc:
            raise BackendError("the openai package is not installed: pip install openai") from exc
        return openai.AsyncOpenAI(
            api_key=self._key,
            base_url=self.base_url,
            timeout=self.config.timeout_s,
            max_retries=self.config.max_retries,
            http_client=openai.DefaultAsyncHttpxClient(event_hooks={"request": [_count_request]}),
        )

    # -- context ---------------------------------------------------------------------------------------
    @property
    def context_size(self) -> int | None:
        """The model's context window in tokens (``config.context_size``); ``None`` when unknown."""
        return self.config.context_size

    def count_tokens(self, text: str) -> int | None:
        """``None``: a remote model's tokenizer is not available here (callers estimate, e.g. chars / 4)."""
        return None

    def count_request_tokens(self, request: GenerationRequest) -> int | None:
        """``None``, as :meth:`count_tokens`."""
        return None

    # -- lifecycle -------------------------------------------------------------------------------------
    def check(self) -> None:
        """One-line :class:`BackendError` for a wrong key or an unreachable server."""
        _run(self._acheck())
        self._checked = True

    async def _acheck(self) -> None:
        import openai

        # retried like every request (a dropped connection must not abort the run), but with a short timeout
        client = self._client().with_options(timeout=min(self.config.timeout_s, 15))
        try:
            models = await client.models.list()
            names = [m.id for m in models.data]
            if names and self.config.model not in names:
                log.warning("server at %s lists %s, not %s", self._safe_url, names[:5], self.config.model)
        except openai.AuthenticationError as exc:
            raise BackendError(
                f"authentication failed at {self._safe_url} (HTTP {exc.status_code}): "
                f"check ${self.config.api_key_env}"
            ) from None
        except openai.PermissionDeniedError:
            raise BackendError(
                f"permission denied at {self._safe_url}: check ${self.config.api_key_env}"
            ) from None
        except openai.NotFoundError:
            pass  # some servers have no /models; the first request will tell
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise BackendError(f"cannot reach {self._safe_url}: {type(exc).__name__}") from None
        except openai.APIStatusError as exc:
            log.warning("model listing at %s answered HTTP %s; going on", self._safe_url, exc.status_code)
        finally:
            await client.close()

    def close(self) -> None:
        pass

    # -- generation ------------------------------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest], on_result: OnResult | None = None) -> list[Result]:
        if self.config.check_on_start and not self._checked:
            self.check()
        return _run(self._agenerate(requests, on_result))

    async def _agenerate(self, requests, on_result) -> list[Result]:
        client = self._client()
        sem = asyncio.Semaphore(self.config.max_concurrency)
        throttle = _Throttle(self.config.rpm, self.config.tpm)
        results: list[Result] = []
        self._empty = _EmptyCounts()

        async def one(req: GenerationRequest, indices: list[int]) -> None:
            async with sem:
                for res in await self._call_group(client, throttle, req, indices):
                    results.append(res)
                    if on_result:
                        on_result(req, res)

        tasks = []
        for req in requests:
            if self.config.use_n and not self._n_ignored:
                tasks.append(one(req, list(req.sample_indices())))
            else:
                tasks.extend(one(req, [i]) for i in req.sample_indices())
        try:
            await asyncio.gather(*tasks)
        finally:
            await client.close()
        e = self._empty
        if e.answers:
            log.warning(
                "%s: %d empty answers (%d samples) from %d requests were asked again: %d samples recovered, "
                "%d still empty after %d extra tries",
                self._safe_url,
                e.answers,
                e.samples,
                e.requests,
                e.recovered,
                e.lost,
                self.config.output_retries,
            )
        return results

    async def _call_group(self, client, throttle, req: GenerationRequest, indices: list[int]) -> list[Result]:
        """Sample ``indices`` of ``req``; retry unusable answers; return one Result per index.

        A server that answers fewer choices than ``n`` (llama.cpp's ignores ``n``) is asked again for the rest
        without that counting as a failed try; later requests then ask for one sample at a time.
        """
        g = _Group(pending=list(indices))
        while g.pending and g.bad <= self.config.output_retries:
            if g.bad:
                g.output_retries += 1
                await asyncio.sleep(self.config.backoff_s * 2 ** (g.bad - 1) * (0.5 + random.random()))
            n = 1 if self._n_ignored else len(g.pending)
            s = req.sampling
            await throttle.wait(
                len(req.prompt or "".join(c for _, c in req.messages or ())) // 4 + s.max_tokens * n
            )
            t0 = time.perf_counter()
            answer = await self._request(client, req, self._params(req, n, g.pending[0]), g)
            if answer is None:
                continue
            resp, texts = answer
            self._take(req, g, resp, texts, n, time.perf_counter() - t0)
        return self._results(req, indices, g)

    def _params(self, req: GenerationRequest, n: int, first: int) -> dict[str, Any]:
        s = req.sampling
        params: dict[str, Any] = dict(
            model=self.config.model,
            max_tokens=s.max_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            seed=s.seed + first,
        )
        if s.stop:
            params["stop"] = list(s.stop)[:4]
        if n > 1:
            params["n"] = n
        params.update(_body_params(req, self.config.extra_body))
        return params

    async def _request(self, client, req: GenerationRequest, params: dict[str, Any], g: _Group):
        """One call (the SDK retries transport errors); (response, [(index, text, finish)]) or None after a
        failure, which is counted in ``g``."""
        import openai

        g.calls += 1
        box = [0]
        token = _REQUESTS.set(box)
        try:
            if req.mode == "completion":
                resp = await client.completions.create(prompt=req.prompt or "", **params)
                return resp, [(c.index, c.text, c.finish_reason) for c in resp.choices or []]
            resp = await client.chat.completions.create(messages=req.message_dicts(), **params)
            content = [
                (c.index, c.message.content if c.message else None, c.finish_reason)
                for c in resp.choices or []
            ]
            return resp, content
        except (openai.APIStatusError, openai.APIConnectionError, openai.APITimeoutError) as exc:
            # the SDK already retried transport errors with backoff; other 4xx will not improve
            g.last_error = _describe(exc)
            log.warning("request %s failed: %s", req.id, g.last_error)
            g.bad += 1
            if isinstance(exc, openai.APIStatusError) and exc.status_code in (400, 401, 403, 404, 422):
                g.bad = self.config.output_retries + 1  # no further try
            return None
        except (ValueError, openai.APIResponseValidationError, AttributeError, TypeError) as exc:
            g.last_error = f"malformed response: {type(exc).__name__}"
            log.warning("request %s: %s", req.id, g.last_error)
            g.bad += 1
            return None
        finally:
            _REQUESTS.reset(token)
            g.requests += max(1, box[0])  # at least the call itself, whatever the HTTP client reports

    def _take(self, req: GenerationRequest, g: _Group, resp, texts: list, n: int, seconds: float) -> None:
        """Keep the non-empty answers of one call (token totals split exactly over them)."""
        usage = getattr(resp, "usage", None)
        p_tok = getattr(usage, "prompt_tokens", 0) or 0
        c_tok = getattr(usage, "completion_tokens", 0) or 0
        texts.sort(key=lambda t: t[0] if isinstance(t[0], int) else 0)
        if n > 1 and 0 < len(texts) < n:
            if not self._n_ignored:
                log.info(
                    "server at %s answers fewer choices than n; asking one sample at a time", self._safe_url
                )
            self._n_ignored = True
        fresh = []
        empty = False
        for k, idx in enumerate(g.pending[: len(texts)]):
            text = texts[k][1]
            lp = _choice_logprobs(resp, texts[k][0], req.choices)
            if (text is None or not text.strip()) and not lp:  # with choice log-probs it still answers
                empty = True
                g.was_empty.add(idx)
                self._empty.answers += 1
                continue
            fresh.append(idx)
            g.done[idx] = OpenAIResult(
                request_id=req.id,
                sample_index=idx,
                text=text or "",
                finish_reason=texts[k][2],
                seconds=seconds / max(1, len(texts)),
                attempts=0,
                choice_logprobs=lp,
            )
        for k, idx in enumerate(fresh):  # token totals stay exact when n samples share one call
            g.done[idx].completion_tokens = c_tok // len(fresh) + (1 if k < c_tok % len(fresh) else 0)
            g.done[idx].prompt_tokens = p_tok if k == 0 else 0
        if empty or not texts:
            g.last_error = "empty output" if texts else "no choices in the answer"
            g.bad += 1
        g.pending = [i for i in g.pending if i not in g.done]

    def _results(self, req: GenerationRequest, indices: list[int], g: _Group) -> list[Result]:
        results: list[OpenAIResult] = []
        for idx in indices:
            res = g.done.get(idx) or OpenAIResult(
                request_id=req.id, sample_index=idx, error=g.last_error or "no answer"
            )
            res.attempts = 0
            results.append(res)
        results[0].attempts = g.calls
        results[0].requests = g.requests
        results[0].output_retries = g.output_retries
        if g.was_empty:
            self._empty.requests += 1
            self._empty.samples += len(g.was_empty)
            self._empty.recovered += sum(1 for i in g.was_empty if i in g.done)
            self._empty.lost += sum(1 for i in g.was_empty if i not in g.done)
        return results


@dataclass
class _Group:
    """The state of one request's samples while they are asked for (and asked again)."""

    pending: list[int]
    done: dict[int, OpenAIResult] = field(default_factory=dict)
    calls: int = 0
    requests: int = 0
    output_retries: int = 0
    bad: int = 0
    last_error: str | None = None
    was_empty: set[int] = field(default_factory=set)  # samples that came back empty at least once


@dataclass
class _EmptyCounts:
    """Empty answers within one ``generate`` (for the warning that says they were asked again)."""

    answers: int = 0
    samples: int = 0
    requests: int = 0
    recovered: int = 0
    lost: int = 0


def _describe(exc) -> str:
    status = getattr(exc, "status_code", None)
    return f"{type(exc).__name__}" + (f" (HTTP {status})" if status else "")


def _run(coro):
    """Run a coroutine from sync code, also when an event loop is already running in this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


CHOICE_TOP_LOGPROBS = 20
"""Top log-probabilities asked for the first token of a chat answer with choices (OpenAI's maximum)."""
COMPLETION_TOP_LOGPROBS = 5
"""The same for completion requests (the legacy completions API allows at most 5)."""
_CHOICE_KEYS = ("guided_choice", "structured_outputs", "grammar")


def _body_params(req: GenerationRequest, extra_body: dict[str, Any]) -> dict[str, Any]:
    """``extra_body`` (choice placeholders filled in or left out) and, for requests with choices, the
    log-probability parameters (see the module docstring)."""
    body = dict(extra_body)
    out: dict[str, Any] = {}
    if req.choices:
        if "guided_choice" in body:
            body["guided_choice"] = list(req.choices)
        if "structured_outputs" in body:  # vLLM >= 0.11
            body["structured_outputs"] = {"choice": list(req.choices)}
        if "grammar" in body:
            body["grammar"] = choice_grammar(req.choices)
        if req.mode == "chat":
            out.update(logprobs=True, top_logprobs=CHOICE_TOP_LOGPROBS)
        else:
            out["logprobs"] = COMPLETION_TOP_LOGPROBS
    else:
        body = {k: v for k, v in body.items() if not (k in _CHOICE_KEYS and v is True)}
    if body:
        out["extra_body"] = body
    return out


def _choice_logprobs(resp, index, choices: tuple[str, ...]) -> dict[str, float] | None:
    """Log-probabilities of ``choices`` as the first token of answer ``index`` of ``resp`` (spellings with
    spaces around summed); ``None`` without choices or without log-probabilities in the answer."""
    if not choices:
        return None
    choice = next((c for c in resp.choices or [] if c.index == index), None)
    lp = getattr(choice, "logprobs", None)
    if lp is None:
        return None
    first: list[tuple[str, float]] = []
    content = getattr(lp, "content", None)
    if content:  # chat: per token, with its top alternatives
        tok = content[0]
        first = [(t.token, t.logprob) for t in (getattr(tok, "top_logprobs", None) or [])]
        first.append((tok.token, tok.logprob))
    elif getattr(lp, "top_logprobs", None):  # completion: one dict per token
        first = list((lp.top_logprobs[0] or {}).items())
    elif getattr(lp, "tokens", None) and getattr(lp, "token_logprobs", None):
        first = [(lp.tokens[0], lp.token_logprobs[0])]
    found: dict[str, float] = {}
    seen: set[str] = set()
    for token, value in first:
        key = (token or "").strip()
        if key not in choices or token in seen or value is None:
            continue
        seen.add(token)
        found[key] = _logaddexp(found[key], float(value)) if key in found else float(value)
    return found or None


def _logaddexp(a: float, b: float) -> float:
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))
