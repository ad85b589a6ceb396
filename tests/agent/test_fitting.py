"""Prompts and outputs fitted to the model (issue 11, item 8): max_tokens from the data's lengths, few-shot
prompts shortened to the context, a warning when a round's outputs are mostly unusable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from activesynth.agent.config import GenerateConfig, PlannerConfig
from activesynth.agent.fitting import PromptFit, needed_tokens, unusable_warning
from activesynth.agent.planner import Planner
from activesynth.agent.synthesize import render_requests
from tests.conftest import SMALL_LABELS, banking_slice

DATA = Path(__file__).resolve().parents[1] / "prompts" / "data"


def long_texts(n: int, words: int = 180) -> list[str]:
    """Long real-looking texts: BANKING77 messages joined into paragraphs (for length tests only)."""
    pool = [r["text"] for r in banking_slice("train", SMALL_LABELS, 40)]
    out = []
    for i in range(n):
        chunk, k = [], i
        while sum(len(x.split()) for x in chunk) < words:
            chunk.append(pool[k % len(pool)])
            k += 7
        out.append(" ".join(chunk))
    return out


def test_needed_tokens_keeps_short_data_short_and_sizes_long_data():
    short = [r["text"] for r in banking_slice("train", SMALL_LABELS, 10)]
    assert needed_tokens(short) <= 48  # BANKING77: the configured 48 stays, the demo's cache keys too
    assert needed_tokens(long_texts(10)) > 200
    assert needed_tokens(["a b c"], count=lambda t: 100) == 108
    assert needed_tokens([]) == 0


def test_unusable_warning_names_reasons_and_fixes():
    stats = {"parsed": 17, "unusable:truncated": 67, "unusable:prompt_too_long": 22, "surplus": 3}
    line = unusable_warning(stats)
    assert line.startswith("84% of this round's outputs were unusable (truncated 67, prompt_too_long 22)")
    assert "generate.sampling.max_tokens" in line and "n_ctx_max" in line
    assert unusable_warning({"parsed": 90, "unusable:no_text": 10}) is None
    assert unusable_warning({}) is None


class WordCounter:
    """Counts words as tokens with a fixed context (a fast stand-in for a tokenizer)."""

    def __init__(self, context: int) -> None:
        self.context_size = context
        self.counted = 0

    def count_request_tokens(self, req) -> int:
        self.counted += 1
        return len((req.prompt or "").split())


def _plan(examples: list[str]):
    report = json.loads((DATA / "uncertainty_report.json").read_text())
    labels = report["dataset"]["labels"]
    plan = Planner(PlannerConfig(n_texts=4, mode="untargeted", spread=1.0, n_examples=8)).plan(
        report, {lab: examples for lab in labels}, {lab: 40 for lab in labels}, round_index=1
    )
    plan.items = plan.items[:1]
    return plan


def test_a_prompt_too_long_for_the_context_shows_fewer_examples():
    plan = _plan(long_texts(8))
    full = render_requests(plan)
    counter = WordCounter(context=700)
    fitted = render_requests(plan, fit=PromptFit.for_backend(counter))
    assert len(full[0].examples) == 8 and len(full[0].request.prompt.split()) + 48 > 700
    for job in fitted:
        assert len(job.request.prompt.split()) + job.request.sampling.max_tokens <= 700
        assert 1 <= len(job.examples) < 8
    short = render_requests(
        _plan([r["text"] for r in banking_slice("train", SMALL_LABELS, 10)]),
        fit=PromptFit.for_backend(WordCounter(2048), floor=2048),
    )
    assert all(len(j.examples) == 8 for j in short)
    tiny = WordCounter(context=5)  # nothing fits: the full prompt goes out and the backend refuses it
    assert len(render_requests(plan, fit=PromptFit.for_backend(tiny))[0].examples) == 8


def test_short_prompts_are_never_counted():
    counter = WordCounter(context=2048)
    render_requests(
        _plan([r["text"] for r in banking_slice("train", SMALL_LABELS, 10)]),
        fit=PromptFit.for_backend(counter, floor=2048),
    )
    assert counter.counted == 0


@pytest.mark.slow
def test_long_texts_with_the_real_local_model(tmp_path):
    """Gemma-3-270M through llama.cpp with its context pinned at 2,048 tokens: long few-shot prompts are
    shortened to fit and max_tokens is raised to the data's length, so no sample is lost to the context."""
    pytest.importorskip("llama_cpp")
    from activesynth.agent.llm.cache import CachedBackend, LLMCache
    from activesynth.agent.llm.local import LocalBackend
    from activesynth.agent.synthesize import synthesize

    cfg = GenerateConfig.model_validate(
        {"backend": {"kind": "local", "model": "gemma3-270m", "n_ctx": 2048, "n_ctx_max": 2048, "threads": 2}}
    )
    plan = _plan(long_texts(8, words=220))
    backend = CachedBackend(LocalBackend(cfg.backend), LLMCache(tmp_path / "c.sqlite"))
    try:
        res = synthesize(plan, backend, 1, out_dir=tmp_path / "round-01", config=cfg)
    finally:
        backend.close()
    rec = res.record
    assert rec["sampling"]["max_tokens"] > 200  # sized from the data, not the configured 48
    assert not rec["stats"].get("unusable:prompt_too_long")
    assert all(not (r.get("reason") or "").startswith("backend_error") for r in res.candidates)
