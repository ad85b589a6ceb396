"""Likelihood verifier benchmark: does the generator's own likelihood keep right labels and reject wrong ones?

Real BANKING77 test texts (``--items``, seeded): the first half carry their gold label, the second half the
10-shot classifier's most confusable wrong label (its likeliest class other than the gold one) — the
protocol of the judge measurement in ``../shared/RESOURCES.md``. The few-shot data is the usual
10 real training texts per class: the classifier (frozen all-MiniLM-L6-v2 heads) is fit on them and each
label's verifier context shows ``--n-examples`` of them (:class:`activesynth.agent.verify.LikelihoodVerifier`
with Gemma-3-270M through llama.cpp). Rivals are the classifier's top others besides the carried label; the
verifier scores ``--rivals`` of them once, and the rows for fewer rivals reuse the first ones' scores.

The table reports, per number of rivals and per threshold on the per-token log-likelihood ratio
(own context minus the best rival's): right kept / wrong kept (share of gold-labelled / wrongly labelled
texts kept); the same when the verifier is stacked on the classifier's margin rule (both must keep); the
classifier's margin rule alone (keep when p(label) >= 0.1 and margin >= -0.1) is the reference row. Then the
ratio's AUC (right vs wrong), what relabelling to the best rival would do at a few relabel margins (the share
of wrongly labelled texts relabelled, how many of those get their gold label, and the share of rightly
labelled texts that would lose it), the per-text scores in ``--out``, and the
cost: prefix evaluations, passes, seconds per candidate (model loaded beforehand) and the load average
before and after: the machine is a shared 2-core one, so seconds depend on what else runs.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.bench_verify`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TASK = "Messages that customers send to their bank's support chat"
THRESHOLDS = (-0.2, -0.1, -0.05, 0.0, 0.05, 0.1, 0.2, 0.3)
RELABEL_MARGINS = (0.0, 0.1, 0.2, 0.3)


def build_items(n: int, rivals: int, seed: int):
    """(texts, carried labels, gold labels, right flags, rival tuples, classifier keep flags, examples)."""
    from activesynth.agent.classifier import build_classifier
    from activesynth.agent.config import DataConfig, RunConfig
    from activesynth.agent.datasets import load
    from activesynth.agent.embed import Embedder

    cfg = RunConfig(data=DataConfig(dataset="banking77", shots=10, seed=seed, selection_fraction=0))
    ds = load(cfg.data)
    clf = build_classifier(cfg.classifier, Embedder())
    clf.fit(ds.train.texts, ds.train.labels)
    texts, gold = ds.test.reveal("evaluation")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(texts), size=n, replace=False)
    texts = [texts[i] for i in pick]
    gold = [gold[i] for i in pick]
    classes = list(clf.classes_)
    proba = np.asarray(clf.predict_proba(texts))
    carried, right = [], []
    for k, (row, g) in enumerate(zip(proba, gold, strict=True)):
        if k < n // 2:
            carried.append(g)
            right.append(True)
        else:  # the classifier's likeliest class other than the gold one
            order = [classes[j] for j in np.argsort(-row, kind="stable") if classes[j] != g]
            carried.append(order[0])
            right.append(False)
    idx = np.array([classes.index(a) for a in carried])
    p = proba[np.arange(n), idx]
    others = proba.copy()
    others[np.arange(n), idx] = -np.inf
    clf_keep = (p >= 0.1) & (p - others.max(axis=1) >= -0.1)
    rival_sets = rivals_from_proba(proba, classes, carried, rivals)
    examples: dict[str, list[str]] = {}
    for t, lab in zip(ds.train.texts, ds.train.labels, strict=True):
        examples.setdefault(lab, []).append(t)
    return texts, carried, gold, np.array(right), rival_sets, clf_keep, examples


def rivals_from_proba(proba, classes, labels, k: int) -> list[tuple[str, ...]]:
    """Per row, the classifier's ``k`` likeliest classes other than the row's label (best first)."""
    return [
        tuple(classes[j] for j in np.argsort(-row, kind="stable") if classes[j] != label)[:k]
        for row, label in zip(proba, labels, strict=True)
    ]


def ratios(results, k: int) -> np.ndarray:
    """Per-token log-ratio of each result against its first ``k`` rivals (NaN where unscored)."""
    out = np.full(len(results), np.nan)
    for i, r in enumerate(results):
        if r.logprob is None or not r.n_tokens:
            continue
        scored = [v for v in list(r.rival_logprobs.values())[:k]]
        if scored:
            out[i] = (r.logprob - max(scored)) / r.n_tokens
    return out


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a right text's ratio > a wrong text's ratio), ties counted half."""
    pos, neg = pos[~np.isnan(pos)], neg[~np.isnan(neg)]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + ties / 2)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=300, help="Test texts verified (half right, half wrong).")
    ap.add_argument("--rivals", type=int, default=3, help="Most rival labels scored per text.")
    ap.add_argument("--n-examples", type=int, default=8, help="Real examples shown in each label's context.")
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="Also write the numbers as JSON here.")
    args = ap.parse_args(argv)

    from activesynth.agent.verify import LikelihoodVerifier, VerifierConfig, VerifyItem

    t0 = time.perf_counter()
    texts, carried, gold, right, rival_sets, clf_keep, examples = build_items(
        args.items, args.rivals, args.seed
    )
    print(
        f"BANKING77 test, {len(texts)} texts ({right.sum()} right, {(~right).sum()} wrong labels); "
        f"classifier and data ready in {time.perf_counter() - t0:.0f}s",
        flush=True,
    )
    cfg = VerifierConfig(
        model=args.model, threads=args.threads, n_examples=args.n_examples, rivals=args.rivals, seed=args.seed
    )
    verifier = LikelihoodVerifier(cfg, examples=examples, task=TASK)
    verifier.load()
    items = [
        VerifyItem(t, lab, r, f"t{k}")
        for k, (t, lab, r) in enumerate(zip(texts, carried, rival_sets, strict=True))
    ]
    load_before = os.getloadavg()
    t = time.perf_counter()
    results = verifier.verify(items)
    seconds = time.perf_counter() - t
    load_after = os.getloadavg()
    st = verifier.stats
    verifier.close()

    lines = [
        "| rule | rivals | threshold | right kept | wrong kept | with margin rule: right kept | wrong kept |",
        "|---|---|---|---|---|---|---|",
        f"| classifier margin rule (p ≥ 0.1, margin ≥ −0.1) | | | {100 * clf_keep[right].mean():.0f} % "
        f"| {100 * clf_keep[~right].mean():.0f} % | | |",
    ]
    summary: dict = {
        "items": len(texts),
        "right": int(right.sum()),
        "wrong": int((~right).sum()),
        "margin_rule": {
            "right_kept": float(clf_keep[right].mean()),
            "wrong_kept": float(clf_keep[~right].mean()),
        },
        "rows": [],
    }
    for k in range(1, args.rivals + 1):
        r = ratios(results, k)
        for thr in THRESHOLDS:
            keep = np.nan_to_num(r, nan=np.inf) >= thr  # unscored texts are kept
            both = keep & clf_keep
            lines.append(
                f"| likelihood ratio | {k} | {thr:+.2f} | {100 * keep[right].mean():.0f} % "
                f"| {100 * keep[~right].mean():.0f} % | {100 * both[right].mean():.0f} % "
                f"| {100 * both[~right].mean():.0f} % |"
            )
            summary["rows"].append(
                {
                    "rivals": k,
                    "threshold": thr,
                    "right_kept": float(keep[right].mean()),
                    "wrong_kept": float(keep[~right].mean()),
                    "with_margin_right_kept": float(both[right].mean()),
                    "with_margin_wrong_kept": float(both[~right].mean()),
                }
            )
    print("\n" + "\n".join(lines))

    print(
        "\n| rivals | AUC (right vs wrong) | relabel margin | wrong relabelled | … to the gold label "
        "| right relabelled (harm) |"
    )
    print("|---|---|---|---|---|---|")
    summary["relabel"] = []
    for k in range(1, args.rivals + 1):
        r = ratios(results, k)
        best = [
            max(list(x.rival_logprobs.items())[:k], key=lambda kv: kv[1])[0] if x.rival_logprobs else None
            for x in results
        ]
        is_gold = np.array([b == g for b, g in zip(best, gold, strict=True)])
        area = auc(r[right], r[~right])
        for m in RELABEL_MARGINS:
            flips = np.nan_to_num(r, nan=np.inf) < -m
            row = {
                "rivals": k,
                "auc": area,
                "margin": m,
                "wrong_relabelled": float((flips & ~right).sum() / max(1, (~right).sum())),
                "to_gold": float((flips & ~right & is_gold).sum() / max(1, (flips & ~right).sum())),
                "right_relabelled": float((flips & right).sum() / max(1, right.sum())),
            }
            summary["relabel"].append(row)
            print(
                f"| {k} | {area:.3f} | {m:.2f} | {100 * row['wrong_relabelled']:.0f} % "
                f"| {100 * row['to_gold']:.0f} % | {100 * row['right_relabelled']:.0f} % |"
            )
    summary["items_detail"] = [
        {
            "right": bool(ok),
            "gold": g,
            "label": x.label,
            "n_tokens": x.n_tokens,
            "logprob": x.logprob,
            "rival_logprobs": x.rival_logprobs,
            "margin_rule_keeps": bool(ck),
        }
        for x, g, ok, ck in zip(results, gold, right, clf_keep, strict=True)
    ]
    unscored = sum(x.ratio is None for x in results)
    per_pass = st.candidate_s / max(1, st.candidate_evals)
    pass_tokens = st.candidate_tokens / max(1, st.candidate_evals)
    cost = {
        "seconds": seconds,
        "seconds_per_candidate": seconds / len(texts),
        "prefix_evals": st.prefix_evals,
        "prefix_tokens": st.prefix_tokens,
        "prefix_s": st.prefix_s,
        "restores": st.restores,
        "passes": st.candidate_evals,
        "pass_tokens": st.candidate_tokens,
        "seconds_per_pass": per_pass,
        "unscored": unscored,
        "threads": args.threads,
        "load_before": load_before[0],
        "load_after": load_after[0],
        "n_examples": args.n_examples,
    }
    summary["cost"] = cost
    print(
        f"\nCost ({args.model}, llama.cpp, {args.threads} thread(s), {args.n_examples} examples per context; "
        f"a shared 2-core machine, load average {load_before[0]:.1f} before, {load_after[0]:.1f} after):\n"
        f"- {len(texts)} texts in {seconds:.0f}s = {seconds / len(texts):.2f} s per candidate with "
        f"{args.rivals} rivals ({unscored} unscored)\n"
        f"- {st.prefix_evals} context prefixes evaluated once each ({st.prefix_tokens} tokens, "
        f"{st.prefix_s:.0f}s), {st.restores} restores ({1000 * st.restore_s:.0f} ms in all)\n"
        f"- {st.candidate_evals} (text, context) passes of {pass_tokens:.1f} tokens on average, "
        f"{per_pass:.2f} s each; so about {per_pass * 2:.2f} s per candidate with 1 rival, "
        f"{per_pass * 3:.2f} s with 2, {per_pass * 4:.2f} s with 3 (plus the prefixes, once per label)"
    )
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
