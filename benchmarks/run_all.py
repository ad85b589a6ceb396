"""``make bench``: the speed benchmarks that need no LLM and no finished run, one after the other, each
printing its own table of ratios against the reference implementation measured in the same process.

Longer studies are run on their own (README, "Benchmarks"): ``effectiveness``, ``ceiling``, ``simulate``,
``synthetic_value``, ``bench_generate``, ``bench_round``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

# (module, arguments): sizes chosen so the whole set runs in a few minutes on 2 cores
QUICK = [
    ("benchmarks.bench_embed", ["--n", "1000"]),
    ("benchmarks.bench_uncertainty", ["--n", "20000"]),
    ("benchmarks.bench_rouge", ["--pool", "3000", "--sample", "100"]),
    ("benchmarks.bench_dedup", ["--pool", "20000", "--candidates", "2000"]),
]
FULL = [
    ("benchmarks.bench_embed", []),
    ("benchmarks.bench_uncertainty", []),
    ("benchmarks.bench_rouge", []),
    ("benchmarks.bench_dedup", []),
]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the sizes the README reports (slower)")
    args = ap.parse_args(argv)
    for module, extra in FULL if args.full else QUICK:
        print(f"\n=== python -m {module} {' '.join(extra)}", flush=True)
        t0 = time.perf_counter()
        saved = sys.argv
        sys.argv = [module, *extra]
        try:
            importlib.import_module(module).main()
        finally:
            sys.argv = saved
        print(f"--- {module}: {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
