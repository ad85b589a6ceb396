"""OpenAI-compatible backend (OpenAI, vLLM server, llama.cpp server, …) through the official async SDK.

The key comes from an environment variable only (``api_key_env``, default ``OPENAI_API_KEY``); servers on
loopback may run without one. Transport errors (timeouts, 429, 5xx, dropped connections) are retried by the
SDK with backoff; unusable answers (malformed JSON, no choices, empty text) get ``output_retries`` more tries.
A request that still fails becomes a :class:`Result` with ``error`` set and the run goes on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
from collections import deque
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from activesynth.agent.llm.protocol import BackendError, GenerationRequest, OnResult, Result

__all__ = ["OpenAIBackend", "OpenAIConfig"]

log = logging.getLogger(__name__)
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}


class OpenAIConfig(BaseModel):
    """Settings of the OpenAI-compatible backend. No secrets here: the key is read from ``api_key_env``."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["openai"] = Field("openai", description="Backend discriminator.")
    model: str = Field(..., description="Model name as the server knows it.")
    base_url: str | None = Field(
        None,
        description="Server URL such as http://127.0.0.1:8000/v1 (None: $OPENAI_BASE_URL or api.openai.com).",
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="Name of the environment variable holding the key."
    )
    max_concurrency: int = Field(4, ge=1, description="Requests in flight at once.")
    timeout_s: float = Field(60.0, gt=0, description="Timeout of one HTTP request in seconds.")
    max_retries: int = Field(
        3, ge=0, description="SDK retries (with backoff) for timeouts, 429, 5xx, dropped links."
    )
    output_retries: int = Field(
        2, ge=0, description="Extra tries for unusable answers (malformed, no/empty text)."
    )
    backoff_s: float = Field(0.5, ge=0, description="First backoff of our own retries; doubles each try.")
    rpm: int | None = Field(None, ge=1, description="Most requests per minute (None: no limit).")
    tpm: int | None = Field(
        None, ge=1, description="Most tokens per minute, estimated before sending (None: no limit)."
    )
    use_n: bool = Field(True, description="Ask for n samples in one request (off for servers that ignore n).")
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="Passed through as-is (e.g. vLLM's top_k, guided_regex, min_tokens).",
    )
    check_on_start: bool = Field(True, description="List the server's models before work starts (fail fast).")

    def resolved_base_url(self) -> str:
        return self.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"


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
            if host in _LOOPBACK:
                key = "no-key"  # local servers usually accept anything
            else:
                raise BackendError(f"no API key: set the environment variable {config.api_key_env}")
        self._key = key
        self._checked = False
        self._n_ignored = False

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
        )

    # -- lifecycle -------------------------------------------------------------------------------------
    def check(self) -> None:
        """One-line :class:`BackendError` for a wrong key or an unreachable server."""
        _run(self._acheck())
        self._checked = True

    async def _acheck(self) -> None:
        import openai

        client = self._client().with_options(max_retries=0, timeout=min(self.config.timeout_s, 15))
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
        return results

    async def _call_group(self, client, throttle, req: GenerationRequest, indices: list[int]) -> list[Result]:
        """Sample ``indices`` of ``req``; retry unusable answers; return one Result per index.

        A server that answers fewer choices than ``n`` (llama.cpp's ignores ``n``) is asked again for the rest
        without that counting as a failed try; later requests then ask for one sample at a time.
        """
        import openai

        s = req.sampling
        done: dict[int, Result] = {}
        pending = list(indices)
        calls = 0
        bad = 0
        last_error = None
        while pending and bad <= self.config.output_retries:
            if bad:
                await asyncio.sleep(self.config.backoff_s * 2 ** (bad - 1) * (0.5 + random.random()))
            n = 1 if self._n_ignored else len(pending)
            est = len(req.prompt or "".join(c for _, c in req.messages or ())) // 4 + s.max_tokens * n
            await throttle.wait(est)
            params: dict[str, Any] = dict(
                model=self.config.model,
                max_tokens=s.max_tokens,
                temperature=s.temperature,
                top_p=s.top_p,
                seed=s.seed + pending[0],
            )
            if s.stop:
                params["stop"] = list(s.stop)[:4]
            if n > 1:
                params["n"] = n
            if self.config.extra_body:
                params["extra_body"] = dict(self.config.extra_body)
            t0 = time.perf_counter()
            calls += 1
            try:
                if req.mode == "completion":
                    resp = await client.completions.create(prompt=req.prompt or "", **params)
                    texts = [(c.index, c.text, c.finish_reason) for c in resp.choices or []]
                else:
                    resp = await client.chat.completions.create(messages=req.message_dicts(), **params)
                    texts = [
                        (c.index, c.message.content if c.message else None, c.finish_reason)
                        for c in resp.choices or []
                    ]
            except (openai.APIStatusError, openai.APIConnectionError, openai.APITimeoutError) as exc:
                # the SDK already retried transport errors with backoff; other 4xx will not improve
                last_error = _describe(exc)
                log.warning("request %s failed: %s", req.id, last_error)
                bad += 1
                if isinstance(exc, openai.APIStatusError) and exc.status_code in (400, 401, 403, 404, 422):
                    break
                continue
            except (ValueError, openai.APIResponseValidationError, AttributeError, TypeError) as exc:
                last_error = f"malformed response: {type(exc).__name__}"
                log.warning("request %s: %s", req.id, last_error)
                bad += 1
                continue
            seconds = time.perf_counter() - t0
            usage = getattr(resp, "usage", None)
            p_tok = getattr(usage, "prompt_tokens", 0) or 0
            c_tok = getattr(usage, "completion_tokens", 0) or 0
            texts.sort(key=lambda t: t[0] if isinstance(t[0], int) else 0)
            if n > 1 and 0 < len(texts) < n:
                if not self._n_ignored:
                    log.info(
                        "server at %s answers fewer choices than n; asking one sample at a time",
                        self._safe_url,
                    )
                self._n_ignored = True
            fresh = []
            empty = False
            for k, idx in enumerate(pending[: len(texts)]):
                text = texts[k][1]
                if text is None or not text.strip():
                    empty = True
                    continue
                fresh.append(idx)
                done[idx] = Result(
                    request_id=req.id,
                    sample_index=idx,
                    text=text,
                    finish_reason=texts[k][2],
                    seconds=seconds / max(1, len(texts)),
                    attempts=0,
                )
            for k, idx in enumerate(fresh):  # token totals stay exact when n samples share one call
                done[idx].completion_tokens = c_tok // len(fresh) + (1 if k < c_tok % len(fresh) else 0)
                done[idx].prompt_tokens = p_tok if k == 0 else 0
            if empty or not texts:
                last_error = "empty output" if texts else "no choices in the answer"
                bad += 1
            pending = [i for i in pending if i not in done]
        results = []
        for idx in indices:
            res = done.get(idx) or Result(
                request_id=req.id, sample_index=idx, error=last_error or "no answer"
            )
            res.attempts = 0
            results.append(res)
        results[0].attempts = calls
        return results


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
