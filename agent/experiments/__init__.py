"""Experiments built from the loop and its stages, apart from them: arm comparisons (:mod:`.arms`), data
efficiency curves (:mod:`.efficiency`) and template comparisons (:mod:`.templates`)."""
