"""The per-stage round benchmark (``python -m benchmarks.bench_stages``): exclusive stage timing, patches
undone, and one cold + warm run of the real loop on a small real BANKING77 slice.

The end-to-end test loads the embedding model in its cold pass and runs the loop twice (about 40 s on the
2-core development machine, minutes when it is busy), so it is marked slow.
"""

from __future__ import annotations

import os
import time

import pytest

from benchmarks import bench_stages
from benchmarks.bench_stages import COUNTED, Stages, _patched
from tests.conftest import SMALL_LABELS, banking_slice, write_csv


def test_a_stage_excludes_the_stages_nested_in_it():
    st = Stages()
    with st.stage("outer"):
        time.sleep(0.05)
        with st.stage("inner"):
            time.sleep(0.1)
    assert st.seconds["inner"] == pytest.approx(0.1, abs=0.05)
    assert st.seconds["outer"] == pytest.approx(0.05, abs=0.04)
    keys = iter(["a", "b"])
    timed = st.wrap(lambda x: x + 1, lambda: next(keys))  # a key chosen at call time
    assert timed(1) == 2 and timed(2) == 3
    assert st.calls["a"] == st.calls["b"] == 1


def test_patches_are_undone_even_after_an_error():
    class Box:
        value = "old"

    with pytest.raises(RuntimeError), _patched([(Box, "value", "new")]):
        assert Box.value == "new"
        raise RuntimeError("boom")
    assert Box.value == "old"


@pytest.mark.slow
def test_cold_and_warm_round_on_a_small_slice(tmp_path, capsys):
    from activesynth.agent import loop, synthesize
    from activesynth.agent.embed import Embedder

    train = write_csv(tmp_path / "train.csv", banking_slice("train", SMALL_LABELS, 30))
    dev = write_csv(tmp_path / "dev.csv", banking_slice("dev", SMALL_LABELS, 8))
    test = write_csv(tmp_path / "test.csv", banking_slice("test", SMALL_LABELS, 10))
    before = os.environ.get("ACTIVESYNTH_CACHE")
    out = tmp_path / "bench"
    argv = ["--train", str(train), "--dev", str(dev), "--test", str(test), "--shots", "5", "--budget", "16"]
    res = bench_stages.main([*argv, "--out", str(out)])
    cold, warm = res["cold"], res["warm"]

    for p in (cold, warm):
        assert set(COUNTED) - {"other"} <= set(p["seconds"])  # every stage of the round was reached
        assert p["total"] == pytest.approx(sum(p["seconds"][k] for k in COUNTED if k in p["seconds"]))
        assert p["used"] and p["loop_record"]["round"]  # the loop wrote its own timings
    assert "generation" not in COUNTED and "imports" not in COUNTED
    assert "generation" in cold["seconds"] and cold["seconds"]["imports"] > 0
    assert sum(cold["embedded"].values()) > 0  # the cold pass computed embeddings ...
    assert sum(warm["embedded"].values()) == 0  # ... the warm one read every one from the cache
    assert "generation" not in warm["seconds"]  # every answer came from the shared LLM cache
    assert cold["test_accuracy"] == warm["test_accuracy"] and cold["accepted"] == warm["accepted"]
    assert (out / "run-cold" / "round-01" / "metrics.json").is_file()
    assert (out / "run-warm-1" / "summary.json").is_file()

    printed = capsys.readouterr().out
    assert "total excluding generation" in printed and "warm goal" in printed and "cold goal" in printed
    # nothing of the instrumentation stays behind in the process
    assert os.environ.get("ACTIVESYNTH_CACHE") == before
    for obj, name in [(loop, "select_weight"), (loop, "evaluate"), (synthesize, "plan_round")]:
        assert not hasattr(getattr(obj, name), "__wrapped__"), name
    assert not hasattr(Embedder._compute, "__wrapped__")
