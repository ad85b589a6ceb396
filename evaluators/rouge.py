"""Fast ROUGE-L and the Self-Instruct novelty rule.

ROUGE-L F1 of token sequences ``a`` and ``b`` is ``2*LCS/(|a|+|b|)``, and the Indel distance (insertions and
deletions only) is ``|a|+|b|-2*LCS``. So we map each distinct token to one character, let rapidfuzz compute
Indel distances for all pairs in C++ (``process.cdist``), recover the LCS length and compute precision,
recall and F exactly as ``rouge-score`` does (same float operations, so bit-identical scores).

Tokenizer (deviation from ``rouge-score``, on purpose): rouge-score lower-cases and keeps only ``[a-z0-9]``
runs, so a Cyrillic, Greek or Chinese text has no tokens and scores 0 against everything, itself included.
We lower-case and keep runs of Unicode letters and digits; CJK ideographs and kana count as one token each
(those scripts do not separate words by spaces). On ASCII texts the tokens, and therefore the scores, are
exactly rouge-score's (``RougeScorer(["rougeL"], use_stemmer=False)``); on texts with accented Latin letters
they differ (rouge-score splits "café" into "caf").
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np

from activesynth.agent.config.filters import RougeLOptions
from activesynth.evaluators.base import Candidate, Decision, Evaluator, FilterContext, nearest_text, register

__all__ = ["RougeLFilter", "RougeLIndex", "TokenCodec", "rouge_l", "rouge_l_matrix", "tokenize"]

log = logging.getLogger(__name__)

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN_RE = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased runs of Unicode letters/digits; each CJK ideograph or kana is a token of its own."""
    return _TOKEN_RE.findall(text.lower())


class TokenCodec:
    """Maps each distinct token to one character so a text becomes a short string for rapidfuzz."""

    _LIMIT = 0x110000 - 0x800  # code points minus the surrogate block

    def __init__(self) -> None:
        self._codes: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._codes)

    def _code(self, token: str) -> str:
        code = self._codes.get(token)
        if code is None:
            i = len(self._codes)
            if i >= self._LIMIT:
                raise ValueError("more than 1.1 million distinct tokens; ROUGE-L codec is full")
            code = chr(i + 0x800 if i >= 0xD800 else i)
            self._codes[token] = code
        return code

    def encode(self, text: str) -> str:
        """The text's token sequence as a string of one character per token."""
        return "".join(self._code(t) for t in tokenize(text))

    def encode_many(self, texts: Sequence[str]) -> list[str]:
        return [self.encode(t) for t in texts]


def _f_from_distance(dist: np.ndarray, len_a: np.ndarray, len_b: np.ndarray) -> np.ndarray:
    """ROUGE-L F from Indel distances, with rouge-score's float operations (and 0 for empty sides)."""
    n = len_a[:, None].astype(np.float64)
    m = len_b[None, :].astype(np.float64)
    lcs = (n + m - dist) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = lcs / n  # rouge-score: prediction = a
        recall = lcs / m  # target = b
        f = 2 * precision * recall / (precision + recall)
    return np.where((n == 0) | (m == 0) | (lcs == 0), 0.0, f)


def _cdist_f(a: Sequence[str], b: Sequence[str], workers: int) -> np.ndarray:
    from rapidfuzz import process
    from rapidfuzz.distance import Indel

    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    dist = process.cdist(a, b, scorer=Indel.distance, dtype=np.int32, workers=workers)
    la = np.fromiter((len(s) for s in a), dtype=np.int64, count=len(a))
    lb = np.fromiter((len(s) for s in b), dtype=np.int64, count=len(b))
    return _f_from_distance(dist, la, lb)


def rouge_l_matrix(a: Sequence[str], b: Sequence[str], workers: int = 1) -> np.ndarray:
    """ROUGE-L F of every text in ``a`` against every text in ``b``, shape (len(a), len(b))."""
    codec = TokenCodec()
    return _cdist_f(codec.encode_many(a), codec.encode_many(b), workers)


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F of two texts (symmetric)."""
    return float(rouge_l_matrix([a], [b])[0, 0])


class RougeLIndex:
    """A growing set of reference texts with a fast "highest ROUGE-L F against any of them" query."""

    def __init__(self, texts: Sequence[str] = (), workers: int = 1, block: int = 512) -> None:
        self.codec = TokenCodec()
        self.workers = workers
        self.block = block
        self._refs: list[str] = []
        self.add(texts)

    def __len__(self) -> int:
        return len(self._refs)

    def add(self, texts: Sequence[str]) -> None:
        self._refs.extend(self.codec.encode_many(texts))

    def add_encoded(self, codes: Sequence[str]) -> None:
        self._refs.extend(codes)

    def max_scores(self, codes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Best F and the index of the best reference (-1 when none) for each encoded query."""
        best = np.zeros(len(codes))
        arg = np.full(len(codes), -1, dtype=np.int64)
        if not self._refs:
            return best, arg
        for i in range(0, len(codes), self.block):
            b, a = _max_f(codes[i : i + self.block], self._refs, self.workers)
            best[i : i + self.block], arg[i : i + self.block] = b, a
        return best, arg


def _max_f(queries: Sequence[str], refs: Sequence[str], workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Highest exact ROUGE-L F of each query against ``refs`` and its position (-1 when the best is 0).

    rapidfuzz's normalized Indel similarity is ``2*LCS/(n+m)``, the same rational number as F. We take it as
    float32 (error below 1e-7), keep per row the entries within 1e-5 of the row maximum (the exact maximum
    is always among them), recover the integer ``2*LCS`` from them and compute F with rouge-score's float
    operations, so scores are bit-identical to rouge-score's while only one float32 matrix is built.
    """
    from rapidfuzz import process
    from rapidfuzz.distance import Indel

    sim = process.cdist(queries, refs, scorer=Indel.normalized_similarity, dtype=np.float32, workers=workers)
    top = sim.max(axis=1)
    near = (sim >= (top - 1e-5)[:, None]) & (top > 0)[:, None]
    rows, cols = np.nonzero(near)
    n = np.fromiter((len(queries[r]) for r in rows.tolist()), dtype=np.float64, count=len(rows))
    m = np.fromiter((len(refs[c]) for c in cols.tolist()), dtype=np.float64, count=len(cols))
    lcs = np.rint(sim[rows, cols].astype(np.float64) * (n + m)) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        precision, recall = lcs / n, lcs / m
        f = 2 * precision * recall / (precision + recall)
    f = np.where((n == 0) | (m == 0) | (lcs == 0), 0.0, f)
    best = np.zeros(len(queries))
    np.maximum.at(best, rows, f)
    arg = np.full(len(queries), -1, dtype=np.int64)
    is_best = (f == best[rows]) & (f > 0)
    first_rows, first_at = np.unique(rows[is_best], return_index=True)
    arg[first_rows] = cols[is_best][first_at]
    return best, arg


def greedy_novelty(
    codes: Sequence[str],
    index: RougeLIndex,
    threshold: float,
    eligible: Sequence[bool] | None = None,
    block: int = 512,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Self-Instruct's greedy rule over encoded texts, in order.

    A text is kept when its highest F against the index (plus the texts kept before it in this batch)
    is ``<= threshold``; kept texts that are ``eligible`` join the index as we go. Returns
    (kept mask, best score, position in the index of the closest text or -1); batch texts that joined
    have positions from the index's old length on, in the order they joined.
    """
    n = len(codes)
    eligible = [True] * n if eligible is None else list(eligible)
    kept = np.zeros(n, dtype=bool)
    best = np.zeros(n)
    where = np.full(n, -1, dtype=np.int64)
    for start in range(0, n, block):
        chunk = list(codes[start : start + block])
        ref_best, ref_arg = index.max_scores(chunk)  # includes batch texts kept in earlier blocks
        n_before = len(index)
        inner = _cdist_f(chunk, chunk, index.workers) if len(chunk) > 1 else None
        joined: list[int] = []
        for j in range(len(chunk)):
            score, pos = ref_best[j], ref_arg[j]
            if joined:
                row = inner[j, joined]
                k = int(row.argmax())
                if row[k] > score:
                    score, pos = row[k], n_before + k
            i = start + j
            best[i], where[i] = score, pos
            kept[i] = score <= threshold
            if kept[i] and eligible[i]:
                joined.append(j)
        index.add_encoded([chunk[j] for j in joined])
    return kept, best, where


@register("rouge_l")
class RougeLFilter(RougeLOptions, Evaluator):
    """Drop a candidate whose highest ROUGE-L F against real and accepted texts exceeds ``max_f``.

    Self-Instruct's rule, greedy within the batch: candidates that pass (and that no earlier evaluator
    dropped) join the reference set before the next candidate is scored.
    """

    def judge(self, candidates: Sequence[Candidate], context: FilterContext) -> list[Decision]:
        n_real = len(context.real_texts)
        index = RougeLIndex(context.reference_texts(), workers=self.workers, block=self.block)
        n_ref = len(index)
        active = context.is_active(len(candidates))
        codes = index.codec.encode_many([c.text for c in candidates])
        kept, best, where = greedy_novelty(codes, index, self.max_f, active, self.block)
        joined = [i for i in range(len(candidates)) if kept[i] and active[i]]
        decisions = []
        for i in range(len(candidates)):
            score = float(best[i])
            if kept[i]:
                decisions.append(self.keep(f"novel: max rougeL={score:.2f} <= {self.max_f:.2f}", score))
                continue
            near = nearest_text(int(where[i]), n_real, n_ref, candidates, joined)
            decisions.append(
                self.drop(f"near_duplicate: rougeL={score:.2f} > {self.max_f:.2f} to {near}", score)
            )
        return decisions
