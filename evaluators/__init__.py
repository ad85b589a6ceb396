"""Filters that decide which synthetic candidates to keep, and metrics over data and models.

Filters share one interface (``evaluators.base``): ``Evaluator.judge(candidates, context) -> list[Decision]``.
Built in: ``quality`` (QualityRules), ``pii`` (PIIFilter), ``leakage`` (LeakageGuard), ``label_agreement``
(LabelAgreement), ``rouge_l`` (RougeLFilter), ``embedding_dedup`` (EmbeddingDedup). ``evaluators.config``
has ``FilterConfig``, ``evaluators.chain`` runs them, ``evaluators.synthetic_metrics`` scores accepted sets.
Importing this package is cheap: heavy libraries load inside the functions that need them.
"""
