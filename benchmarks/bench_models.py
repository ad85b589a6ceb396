"""Speed of the local models through llama.cpp: load time, prompt (prefill) and decode tokens/s.

Every model is loaded once through :class:`~activesynth.agent.llm.local.LocalBackend` (runtime llama.cpp,
``--threads`` threads) and kept loaded; the models then take turns, prompt by prompt, so that a change in
the machine's load (it is shared) hits all of them alike. Each prompt is a BANKING77 few-shot list prompt
of a different intent (completion mode, sampled at ``--temperature``, up to ``--max-tokens`` new tokens, no
stop string); models with a chat template also answer a chat request asking for five texts of the same
intent. Prefill and decode times come from llama.cpp's own counters (reset before each request), so
decode tokens/s excludes prompt evaluation. The table shows medians over the prompts and the load average
before and after (with 2 cores, a load above 2 means other jobs shared the CPU).

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.bench_models`` (``--help`` for options). The
Qwen models are assembled on first use (``make models``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

from activesynth.agent.llm import LocalConfig, SamplingParams
from activesynth.agent.llm.local import LocalBackend
from activesynth.agent.llm.protocol import GenerationRequest
from benchmarks.bench_generate import banking77

MODELS = ["gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]


def prompts(data, count: int, examples: int, seed: int) -> list[tuple[str, list[str]]]:
    """``count`` (intent, examples) pairs of different intents."""
    rng = random.Random(seed)
    by_label: dict[str, list[str]] = {}
    for text, label in data["train"]:
        by_label.setdefault(label, []).append(text)
    labels = rng.sample(sorted(by_label), count)
    return [(lab.replace("_", " "), rng.sample(by_label[lab], examples)) for lab in labels]


def completion_request(i: int, intent: str, examples: list[str], sampling: SamplingParams):
    body = "\n".join(f"{k + 1}. {t}" for k, t in enumerate(examples))
    head = f'Messages that customers send to their bank, with the intent "{intent}".'
    prompt = f"{head}\n{body}\n{len(examples) + 1}."
    return GenerationRequest(id=f"p{i}", mode="completion", prompt=prompt, sampling=sampling)


def chat_request(i: int, intent: str, examples: list[str], sampling: SamplingParams):
    shown = "\n".join(f"- {t}" for t in examples)
    user = (
        f'Examples of messages that customers send to their bank with the intent "{intent}":\n{shown}\n'
        f"Write 5 new, different messages with this intent, one per line, numbered."
    )
    system = "You write realistic training data for a text classifier. Answer only with the texts."
    return GenerationRequest(
        id=f"c{i}", mode="chat", messages=(("system", system), ("user", user)), sampling=sampling
    )


def timed(be: LocalBackend, req: GenerationRequest) -> dict:
    """Run one request; prefill/decode tokens and milliseconds from llama.cpp's counters."""
    import llama_cpp

    llama = be._load_llama()
    ctx = llama._ctx.ctx
    llama_cpp.llama_perf_context_reset(ctx)
    t0 = time.perf_counter()
    (res,) = be.generate([req])
    wall = time.perf_counter() - t0
    perf = llama_cpp.llama_perf_context(ctx)
    if not res.ok:
        raise SystemExit(f"{be.source.name}: {res.error}")
    return {
        "prompt_tokens": res.prompt_tokens,
        "prefill_tokens": perf.n_p_eval,
        "prefill_ms": perf.t_p_eval_ms,
        "decode_tokens": perf.n_eval,
        "decode_ms": perf.t_eval_ms,
        "completion_tokens": res.completion_tokens,
        "wall_s": wall,
    }


def rate(runs: list[dict], tokens: str, ms: str) -> float:
    vals = [r[tokens] / (r[ms] / 1000) for r in runs if r[ms] > 0 and r[tokens] > 0]
    return statistics.median(vals) if vals else float("nan")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS, help="Local models (names or .gguf paths).")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=6, help="Prompts (intents) per model and mode.")
    ap.add_argument("--examples", type=int, default=8, help="Few-shot examples per prompt.")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="Also write the results as JSON here.")
    args = ap.parse_args(argv)
    data = banking77()
    cases = prompts(data, args.prompts, args.examples, args.seed)
    sampling = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed)
    load_before = os.getloadavg()
    backends, info = {}, {}
    for spec in args.models:
        be = LocalBackend(LocalConfig(model=spec, runtime="llama_cpp", threads=args.threads))
        t0 = time.perf_counter()
        be.load()
        info[spec] = {
            "load_s": time.perf_counter() - t0,
            "file_gb": be.source.gguf_path.stat().st_size / 1e9,
            "chat": be.chat_template is not None,
        }
        timed(be, completion_request(-1, *cases[0], sampling.model_copy(update={"max_tokens": 4})))  # warm-up
        backends[spec] = be
    runs: dict[tuple[str, str], list[dict]] = {}
    for i, (intent, examples) in enumerate(cases):
        for spec, be in backends.items():
            runs.setdefault((spec, "completion"), []).append(
                timed(be, completion_request(i, intent, examples, sampling))
            )
            if info[spec]["chat"]:
                req = chat_request(i, intent, examples, sampling)
                runs.setdefault((spec, "chat"), []).append(timed(be, req))
        print(f"  prompt {i + 1}/{len(cases)} done (load average {os.getloadavg()[0]:.1f})", flush=True)
    for be in backends.values():
        be.close()
    load_after = os.getloadavg()
    rows = []
    for (spec, mode), rr in runs.items():
        rows.append(
            {
                "model": spec,
                "mode": mode,
                "file_gb": info[spec]["file_gb"],
                "load_s": info[spec]["load_s"],
                "prefill_tok_s": rate(rr, "prefill_tokens", "prefill_ms"),
                "decode_tok_s": rate(rr, "decode_tokens", "decode_ms"),
                "prompt_tokens": statistics.median(r["prompt_tokens"] for r in rr),
                "new_tokens": sum(r["completion_tokens"] for r in rr),
                "wall_s": sum(r["wall_s"] for r in rr),
            }
        )
    print(
        f"\nllama.cpp, {args.threads} threads, {len(cases)} BANKING77 prompts per row "
        f"({args.examples} examples, "
        f"T={args.temperature}, up to {args.max_tokens} new tokens), models interleaved; medians.\n"
        f"Load average (1/5/15 min) before {'/'.join(f'{x:.1f}' for x in load_before)}, after "
        f"{'/'.join(f'{x:.1f}' for x in load_after)} on {os.cpu_count()} cores: the machine is shared."
    )
    print(
        "\n| model | mode | GGUF GB | load s | prompt tokens | prefill tok/s | decode tok/s | new tokens "
        "| wall s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['mode']} | {r['file_gb']:.2f} | {r['load_s']:.1f} "
            f"| {r['prompt_tokens']:.0f} | "
            f"{r['prefill_tok_s']:.0f} | {r['decode_tok_s']:.1f} | {r['new_tokens']} | {r['wall_s']:.0f} |"
        )
    if args.out:
        args.out.write_text(
            json.dumps({"threads": args.threads, "load": [load_before, load_after], "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
