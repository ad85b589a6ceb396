"""Measurements, not filters: classification metrics, robustness to perturbations, and the diversity,
fidelity and privacy of a synthetic set. Filters (the evaluators one level up) decide; these only measure."""
