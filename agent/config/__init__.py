"""Typed, strict configuration (pydantic v2, ``extra="forbid"``): the ground floor every layer imports.

- :mod:`.base`: the strict base model, :func:`override` (dotted changes, used by CLI, chat and web alike),
  :func:`describe` (one line per problem), URLs without credentials.
- :mod:`.run`: a run's sections and :class:`RunConfig`.
- :mod:`.generate`: planner, backend, sampling and prices.
- :mod:`.filters`: the filter chain and each built-in evaluator's settings.
"""

from activesynth.agent.config.base import (
    ConfigError,
    PublicUrl,
    StrictModel,
    describe,
    override,
    parse_assignment,
    public_url,
)
from activesynth.agent.config.filters import (
    BUILTIN_FILTERS,
    DEFAULT_ORDER,
    EmbeddingDedupOptions,
    FilterConfig,
    LabelAgreementOptions,
    LabelNeighborsOptions,
    LeakageOptions,
    PIIOptions,
    QualityOptions,
    RougeLOptions,
)
from activesynth.agent.config.generate import EVOL_METHODS, FAMILY_TEMPLATES, GenerateConfig, PlannerConfig
from activesynth.agent.config.run import (
    ClassifierConfig,
    DataConfig,
    EmbedConfig,
    LoopConfig,
    ReportConfig,
    RunConfig,
    TrackingConfig,
    UncertaintyConfig,
    load_config,
)

__all__ = [
    "BUILTIN_FILTERS",
    "DEFAULT_ORDER",
    "EVOL_METHODS",
    "FAMILY_TEMPLATES",
    "ClassifierConfig",
    "ConfigError",
    "DataConfig",
    "EmbedConfig",
    "EmbeddingDedupOptions",
    "FilterConfig",
    "GenerateConfig",
    "LabelAgreementOptions",
    "LabelNeighborsOptions",
    "LeakageOptions",
    "LoopConfig",
    "PIIOptions",
    "PlannerConfig",
    "PublicUrl",
    "QualityOptions",
    "ReportConfig",
    "RougeLOptions",
    "RunConfig",
    "StrictModel",
    "TrackingConfig",
    "UncertaintyConfig",
    "describe",
    "load_config",
    "override",
    "parse_assignment",
    "public_url",
]
