"""vLLM's in-process engine (optional extra ``pip install 'active-synthesis[vllm]'``; needs a GPU).

All prompts of a round are submitted to the engine at once; vLLM schedules them with continuous batching.
"""

from __future__ import annotations

import importlib.util
import logging
import time

from activesynth.agent.config.llm import VLLMConfig
from activesynth.agent.llm.protocol import BackendError, GenerationRequest, OnResult, Result

__all__ = ["VLLMBackend", "VLLMConfig"]

log = logging.getLogger(__name__)


class VLLMBackend:
    """Batch generation with ``vllm.LLM`` (lazy import; clear errors when vLLM or a GPU is missing)."""

    name = "vllm"

    def __init__(self, config: VLLMConfig) -> None:
        self.config = config
        self.model_id = f"vllm:{config.model}"
        self._llm = None

    def check(self) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise BackendError("backend vllm needs the vllm package: pip install 'active-synthesis[vllm]'")
        import torch

        if not torch.cuda.is_available():
            raise BackendError(
                "backend vllm needs a CUDA GPU; none is visible (use --backend local or openai)"
            )

    def close(self) -> None:
        self._llm = None

    def _engine(self):
        if self._llm is None:
            self.check()
            from vllm import LLM

            kwargs = dict(
                model=self.config.model,
                gpu_memory_utilization=self.config.gpu_memory_utilization,
                dtype=self.config.dtype,
                **self.config.engine_kwargs,
            )
            if self.config.max_model_len:
                kwargs["max_model_len"] = self.config.max_model_len
            self._llm = LLM(**kwargs)
        return self._llm

    def generate(self, requests: list[GenerationRequest], on_result: OnResult | None = None) -> list[Result]:
        from vllm import SamplingParams as VSampling

        llm = self._engine()
        results: list[Result] = []
        for mode in ("completion", "chat"):
            group = [r for r in requests if r.mode == mode]
            if not group:
                continue
            params = [
                VSampling(
                    n=r.n,
                    temperature=r.sampling.temperature,
                    top_p=r.sampling.top_p,
                    max_tokens=r.sampling.max_tokens,
                    stop=list(r.sampling.stop) or None,
                    seed=r.sampling.seed + r.first_sample,
                    repetition_penalty=r.sampling.repetition_penalty,
                    **self.config.sampling_extra,
                )
                for r in group
            ]
            t0 = time.perf_counter()
            if mode == "completion":
                outs = llm.generate([r.prompt or "" for r in group], params, use_tqdm=False)
            else:
                outs = llm.chat([r.message_dicts() for r in group], params, use_tqdm=False)
            per = (time.perf_counter() - t0) / max(1, sum(r.n for r in group))
            for req, out in zip(group, outs, strict=True):
                p_tok = len(out.prompt_token_ids or [])
                for k, comp in enumerate(out.outputs):
                    res = Result(
                        request_id=req.id,
                        sample_index=req.first_sample + k,
                        text=comp.text,
                        finish_reason=comp.finish_reason,
                        prompt_tokens=p_tok if k == 0 else 0,
                        completion_tokens=len(comp.token_ids),
                        seconds=per,
                    )
                    results.append(res)
                    if on_result:
                        on_result(req, res)
        return results
