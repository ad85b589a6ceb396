"""Load what a run's config names: its dataset, its embedder, the classifier of a round. The run folder
(:mod:`activesynth.agent.runs`) only knows paths and records; loading models and data happens here."""

from __future__ import annotations

from activesynth.agent.config import EmbedConfig
from activesynth.agent.runs import Run

__all__ = ["load_classifier", "load_dataset", "load_embedder"]


def load_dataset(run: Run):
    """The run's dataset (roles split, PII scrubbed; test sealed)."""
    from activesynth.agent.datasets import load

    return load(run.config.data)


def load_embedder(config: EmbedConfig):
    """The sentence embedder with its disk cache."""
    from activesynth.agent.embed import Embedder

    return Embedder(
        config.model, cache_dir=config.cache_dir, precision=config.precision, batch_size=config.batch_size
    )


def load_classifier(run: Run, n: int | None = None, embedder=None):
    """Round ``n``'s classifier (without ``n``: the exported final one, else the latest round's)."""
    from activesynth.agent.classifier import load_classifier as load

    return load(run.model_dir(n), embedder or load_embedder(run.config.embed))
