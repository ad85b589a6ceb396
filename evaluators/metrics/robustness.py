"""Robustness of a classifier: metrics on perturbed copies of a test set, and a greedy attack.

* :class:`Perturb` makes a seeded perturbed copy of texts: ``typos`` (adjacent swaps, drops, repeats inside
  words), ``casing`` (random upper/lower/title per word) or ``drop_words``.
* :class:`GreedyAttack` flips predictions with at most ``max_edits`` character-level word edits, editing
  the most important words first (importance = drop of the true-class probability when the word is removed).
  ``attack(texts, labels)`` returns the success rate over texts that were classified correctly.

Both take a ``proba_fn(texts) -> (n, C)`` so they work with any classifier without polluting caches.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["GreedyAttack", "Perturb", "robustness_metrics"]

ProbaFn = Callable[[Sequence[str]], np.ndarray]


class Perturb:
    """Seeded text perturbations; ``apply(texts) -> texts``."""

    KINDS = ("typos", "casing", "drop_words")

    def __init__(self, kind: str, rate: float = 0.15, seed: int = 0) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}")
        self.kind, self.rate, self.seed = kind, rate, seed

    def apply(self, texts: Sequence[str]) -> list[str]:
        rng = random.Random(self.seed)
        return [self._one(t, rng) for t in texts]

    def _one(self, text: str, rng: random.Random) -> str:
        words = text.split()
        if self.kind == "drop_words":
            kept = [w for w in words if rng.random() >= self.rate]
            return " ".join(kept or words[:1])
        out = []
        for w in words:
            if rng.random() < self.rate:
                w = _typo(w, rng) if self.kind == "typos" else rng.choice([w.upper(), w.lower(), w.title()])
            out.append(w)
        return " ".join(out)


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 3:
        return word
    i = rng.randrange(1, len(word) - 1)
    op = rng.choice(("swap", "drop", "repeat"))
    if op == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if op == "drop":
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]


class GreedyAttack:
    """Greedy word-importance attack with character edits (a DeepWordBug-style baseline)."""

    def __init__(self, max_edits: int = 3, max_texts: int = 100, seed: int = 0) -> None:
        self.max_edits, self.max_texts, self.seed = max_edits, max_texts, seed

    def attack(self, proba_fn: ProbaFn, texts: Sequence[str], labels: Sequence[int]) -> dict:
        rng = np.random.default_rng(self.seed)
        idx = np.arange(len(texts))
        if len(idx) > self.max_texts:
            idx = np.sort(rng.choice(idx, self.max_texts, replace=False))
        base = proba_fn([texts[i] for i in idx])
        correct = [i for j, i in enumerate(idx) if base[j].argmax() == labels[i]]
        flipped, edits_used, queries = 0, [], 0
        for i in correct:
            words = texts[i].split()
            y = labels[i]
            if len(words) < 2:
                continue
            variants = [" ".join(words[:k] + words[k + 1 :]) for k in range(len(words))]
            p = proba_fn(variants)
            queries += len(variants)
            order = np.argsort(p[:, y])  # removing these words hurts the true class most
            current = list(words)
            wr = random.Random(self.seed + int(i))
            for e, k in enumerate(order[: self.max_edits], start=1):
                current[k] = _typo(current[k], wr) if len(current[k]) >= 3 else current[k] + current[k][-1]
                q = proba_fn([" ".join(current)])[0]
                queries += 1
                if q.argmax() != y:
                    flipped += 1
                    edits_used.append(e)
                    break
        n = len(correct)
        return {
            "attacked": n,
            "success_rate": flipped / n if n else 0.0,
            "mean_edits": float(np.mean(edits_used)) if edits_used else None,
            "queries": queries,
            "max_edits": self.max_edits,
        }


def robustness_metrics(
    proba_fn: ProbaFn,
    texts: Sequence[str],
    gold: Sequence[str],
    classes: Sequence[str],
    seed: int = 0,
    attack_texts: int = 100,
) -> dict:
    """Accuracy and macro-F1 on each perturbed copy, and the attack success rate."""
    from activesynth.evaluators.metrics.classification import classification_metrics

    out: dict = {}
    for kind in Perturb.KINDS:
        m = classification_metrics(gold, proba_fn(Perturb(kind, seed=seed).apply(texts)), classes)
        out[kind] = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
    index = {c: i for i, c in enumerate(classes)}
    out["attack"] = GreedyAttack(max_texts=attack_texts, seed=seed).attack(
        proba_fn, list(texts), [index[g] for g in gold]
    )
    return out
