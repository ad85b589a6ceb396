"""LLM backends behind one protocol (``backend.generate(requests) -> list[Result]``), a call cache and usage.

``make_backend(config)`` builds a backend from a :data:`BackendConfig` (``local``, ``openai`` or ``vllm``);
heavy libraries load only when a backend generates.
"""

from __future__ import annotations

from activesynth.agent.config.llm import BackendConfig, LocalConfig, OpenAIConfig, SamplingParams, VLLMConfig
from activesynth.agent.llm.protocol import Backend, BackendError, GenerationRequest, Result

__all__ = [
    "Backend",
    "BackendConfig",
    "BackendError",
    "GenerationRequest",
    "LocalConfig",
    "OpenAIConfig",
    "Result",
    "SamplingParams",
    "VLLMConfig",
    "make_backend",
]


def make_backend(config: LocalConfig | OpenAIConfig | VLLMConfig) -> Backend:
    """Build the backend that ``config.kind`` names."""
    if config.kind == "local":
        from activesynth.agent.llm.local import LocalBackend

        return LocalBackend(config)
    if config.kind == "openai":
        from activesynth.agent.llm.openai import OpenAIBackend

        return OpenAIBackend(config)
    if config.kind == "vllm":
        from activesynth.agent.llm.vllm import VLLMBackend

        return VLLMBackend(config)
    raise BackendError(f"unknown backend kind {config.kind!r}")
