"""A generator-quality simulator: the loop with a simulated generator of known label-noise rate.

The LLM is replaced by :class:`~benchmarks.simulate.generator.SimulatedGenerator`, which answers with real
training texts the few-shot sample left out (never dev, selection or test), a share ε of them texts of a
confusable rival class served as the requested label (noise models ``random``, ``boundary``,
``prototype``), optionally mixed with near-copies of the prompt's examples. The loop's planner, parser,
filters, weighting and rollback run unchanged, so the output says what a generator of a given label-noise
rate is worth and whether the loop's logic holds independently of the embedded model.

    python -m benchmarks.simulate --datasets banking77,hwu64 --eps 0,0.05,0.15,0.30 \\
        --noise random,boundary,prototype --budgets 100,300 --seeds 0,1,2 --out runs/simulate

writes ``benchmarks/results/simulate.md`` and ``benchmarks/results/simulate.png`` (see :mod:`.grid`).
"""

from benchmarks.simulate.generator import (
    LeftOut,
    SimSettings,
    SimulatedGenerator,
    build_left_out,
    format_answer,
    near_copy,
)

__all__ = ["LeftOut", "SimSettings", "SimulatedGenerator", "build_left_out", "format_answer", "near_copy"]
