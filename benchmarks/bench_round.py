"""Generation throughput of one round's plan: candidate texts per second, old settings against new.

Takes a plan a run wrote (``generation_plan.json``), keeps ``--items`` of its units and generates them with
the local backend twice per repeat, interleaved, in one process and with one model object:

- ``per-sample``: each sample renders its own prompt (``samples_per_prompt=1``), sampling runs to
  ``max_tokens`` (no template stops) and texts past a unit's ``n_texts`` are dropped (the settings before);
- ``grouped``: ``samples_per_prompt`` samples share one rendered prompt (evaluated once by llama.cpp),
  templates stop at the end of their output and surplus texts are kept (the defaults now).

It reports samples, parsed texts and seconds, and the ratio of parsed texts per second. No cache is used.

    python -m benchmarks.bench_round runs/demo/seed-0/untargeted/round-01/generation_plan.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("plan")
    ap.add_argument("--items", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--samples-per-prompt", type=int, default=4)
    args = ap.parse_args()

    from activesynth.agent.llm import LocalConfig
    from activesynth.agent.llm.local import LocalBackend
    from activesynth.agent.planner import Plan
    from activesynth.agent.synthesize import candidates_from_results, render_requests

    plan = Plan.load(args.plan)
    plan.items = [i for i in plan.items if i.n_texts > 0][: args.items]
    backend = LocalBackend(LocalConfig(threads=args.threads))

    def run(grouped: bool, rep: int) -> tuple[int, int, float]:
        plan.config = {**plan.config, "samples_per_prompt": args.samples_per_prompt if grouped else 1}
        jobs = render_requests(plan)
        for j in jobs:
            s = j.request.sampling.model_copy(update={"seed": 1000 * rep})
            if not grouped:  # the template's stops were not applied before
                s = s.model_copy(update={"stop": [x for x in s.stop if x not in j.template.stop]})
            j.request = replace(j.request, sampling=s)
        t0 = time.perf_counter()
        results = backend.generate([j.request for j in jobs])
        sec = time.perf_counter() - t0
        recs, _ = candidates_from_results(jobs, results, 1, "local", backend.model_id, keep_surplus=grouped)
        return len(results), sum(r["status"] == "parsed" for r in recs), sec

    rows: dict[str, list[tuple[int, int, float]]] = {"per-sample": [], "grouped": []}
    backend.load()
    for rep in range(args.repeats):
        for name in rows:
            rows[name].append(run(name == "grouped", rep))
            print(name, rep, rows[name][-1], flush=True)
    rate = {n: statistics.median(p / s for _, p, s in r) for n, r in rows.items()}
    print(f"\nplan {args.plan}, {len(plan.items)} units, threads {args.threads or os.cpu_count()}\n")
    print("| settings | samples | parsed texts | seconds | parsed texts / s | ratio |")
    print("|---|---|---|---|---|---|")
    for n, r in rows.items():
        samples, parsed, sec = (statistics.median(x[k] for x in r) for k in range(3))
        print(
            f"| {n} | {samples:.0f} | {parsed:.0f} | {sec:.1f} | {rate[n]:.2f} "
            f"| {rate[n] / rate['per-sample']:.2f} |"
        )
    backend.close()


if __name__ == "__main__":
    main()
