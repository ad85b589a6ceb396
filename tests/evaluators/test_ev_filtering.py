"""agent/filtering.py and ``activesynth filter`` on a real run folder (real data slice, model, FAISS)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from activesynth.agent.cli import app
from activesynth.agent.filtering import FilterInputError, filter_run, load_candidates
from activesynth.agent.runs import Run, read_jsonl

pytestmark = pytest.mark.slow

TEST_TEXT = "Quokka-themed card: how many days until it reaches Perth?"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def candidate(i, text, label, **kw):
    rec = {
        "id": f"cand{i:03d}",
        "round": 1,
        "text": text,
        "label": label,
        "cluster": None,
        "pair": None,
        "template": "list",
        "template_version": "1",
        "model": "test",
        "backend": "none",
        "sampling": {},
        "sample_index": i,
        "prompt_id": "p0",
        "source_text": None,
        "status": "parsed",
        "reason": None,
    }
    rec.update(kw)
    return rec


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, shot_data, banking_dev, embedder, shot_labels):
    from activesynth.agent.classifier import HeadEnsemble
    from activesynth.agent.config import DataConfig, EmbedConfig, RunConfig
    from activesynth.agent.runs import Run

    root = tmp_path_factory.mktemp("run")
    texts, labels = shot_data
    dev = [(t, lab) for t, lab in banking_dev if lab in shot_labels][:30]
    write_jsonl(
        root / "train.jsonl", [{"text": t, "label": lab} for t, lab in zip(texts, labels, strict=True)]
    )
    write_jsonl(root / "dev.jsonl", [{"text": t, "label": lab} for t, lab in dev[:20]])
    test_rows = [{"text": t, "label": lab} for t, lab in dev[20:]] + [
        {"text": TEST_TEXT, "label": "card_arrival"}
    ]
    write_jsonl(root / "test.jsonl", test_rows)
    cfg = RunConfig(
        data=DataConfig(train=root / "train.jsonl", dev=root / "dev.jsonl", test=root / "test.jsonl"),
        embed=EmbedConfig(precision="fp32", cache_dir=embedder._cache.path.parent),
    )
    run = Run.create(root / "run", cfg)
    HeadEnsemble(embedder, n_heads=3).fit(texts, labels).save(run.round_dir(1, create=True) / "model")
    cands = [
        candidate(0, "My card still hasn't shown up, when will it arrive?", "card_arrival"),
        candidate(1, "My card still hasn't shown up, when will it arrive?", "card_arrival"),  # in-batch copy
        candidate(2, texts[0], labels[0]),  # copy of a real training text
        candidate(
            3, "Quokka-themed card: how many days until it reaches Perth??", "card_arrival"
        ),  # test leak
        candidate(4, "Here's a message a customer might write:", "card_arrival"),
        candidate(5, "What is the exchange rate for euros today?", "card_arrival"),  # wrong label
        candidate(6, "", "card_arrival", status="unusable", reason="empty completion"),
        candidate(7, "Email me at a.b@example.com when my new card is sent", "card_arrival"),
        candidate(8, "How much does it cost to take cash out of an ATM abroad?", "cash_withdrawal_charge"),
    ]
    write_jsonl(run.round_dir(1) / "candidates.jsonl", cands)
    return run.path


def test_filter_run_writes_contract_files(run_dir):
    result = filter_run(Run.open(run_dir), 1)
    rdir = Run.open(run_dir).round_dir(1)
    decisions = [obj for _, obj in read_jsonl(rdir / "decisions.jsonl")]
    accepted = [obj for _, obj in read_jsonl(rdir / "accepted.jsonl")]
    report = json.loads((rdir / "filter_report.json").read_text())
    assert [d["id"] for d in decisions] == [f"cand{i:03d}" for i in range(9)]
    by_id = {d["id"]: d for d in decisions}
    for d in decisions:
        assert set(d) == {"id", "accepted", "decisions"}
        if d["id"] != "cand006":
            assert [x["evaluator"] for x in d["decisions"]] == report["order"]
    accepted_ids = {a["id"] for a in accepted}
    assert accepted_ids == {d["id"] for d in decisions if d["accepted"]}
    assert accepted_ids == {"cand000", "cand008"}

    def first_drop(cid):
        return next(x for x in by_id[cid]["decisions"] if x["verdict"] == "drop")

    assert first_drop("cand001")["evaluator"] == "rouge_l"
    assert first_drop("cand002")["reason"].startswith("copy_of_example")
    assert first_drop("cand003")["evaluator"] == "leakage"
    assert first_drop("cand004")["reason"].startswith("meta_reply")
    assert first_drop("cand005")["evaluator"] == "label_neighbors"  # nearer the real exchange-rate texts
    assert first_drop("cand006")["reason"] == "unusable: empty completion"
    assert first_drop("cand007")["reason"] == "personal_data: 1 EMAIL"
    assert report["n_candidates"] == 9 and report["n_accepted"] == 2
    assert sum(report["first_drops"].values()) == 7
    assert report["accepted_metrics"]["diversity"]["n"] == 2
    assert result.report["round"] == 1
    # the test text is nowhere in the written files
    for name in ("decisions.jsonl", "accepted.jsonl", "filter_report.json"):
        content = (rdir / name).read_text()
        assert "Quokka" not in content and "Perth" not in content


def test_cli_rethresholds_without_llm(run_dir):
    res = CliRunner().invoke(
        app, ["filter", "--run", str(run_dir), "--round", "1", "--rouge-max", "1.0", "--no-metrics"]
    )
    assert res.exit_code == 0, res.output
    assert "near_duplicate" in res.output or "novel" in res.output
    accepted = [obj["id"] for _, obj in read_jsonl(Run.open(run_dir).round_dir(1) / "accepted.jsonl")]
    # with ROUGE-L off, the in-batch copy is still caught by the embedding dedup; the real-text copy too
    assert "cand001" not in accepted and "cand000" in accepted
    report = json.loads((Run.open(run_dir).round_dir(1) / "filter_report.json").read_text())
    assert report["config"]["rouge_l"]["max_f"] == 1.0
    res = CliRunner().invoke(app, ["filter", "--run", str(run_dir), "--rouge-max", "2"])
    assert res.exit_code == 2 and "rouge_l.max_f" in res.output


def test_bad_input_one_line_errors(tmp_path, run_dir):
    bad = tmp_path / "candidates.jsonl"
    bad.write_text('{"id": "a", "text": "t", "label": "x"}\n\n{"id": "b", "text": \n', encoding="utf-8")
    with pytest.raises(FilterInputError, match=r"candidates.jsonl:3: malformed JSON"):
        load_candidates(bad)
    bad.write_text('{"id": "a", "text": "t"}\n', encoding="utf-8")
    with pytest.raises(FilterInputError, match=r"candidates.jsonl:1: candidate record lacks label"):
        load_candidates(bad)
    bad.write_text('{"id": "a", "text": "t", "label": "x"}\n{"id": "a", "text": "u", "label": "x"}\n')
    with pytest.raises(FilterInputError, match=r":2: duplicate candidate id a \(first on line 1\)"):
        load_candidates(bad)
    bad.write_text("[1, 2]\n")
    with pytest.raises(FilterInputError, match=r":1: expected a JSON object"):
        load_candidates(bad)

    res = CliRunner().invoke(app, ["filter", "--run", str(tmp_path / "nope")])
    assert res.exit_code == 2 and res.output.strip().count("\n") == 0 and "run folder not found" in res.output
    (tmp_path / "r" / "round-03").mkdir(parents=True)
    res = CliRunner().invoke(app, ["filter", "--run", str(tmp_path / "r"), "--round", "3"])
    assert res.exit_code == 2 and "not a run folder" in res.output
    res = CliRunner().invoke(app, ["filter", "--run", str(run_dir), "--round", "3"])
    assert res.exit_code == 2 and "round-03/candidates.jsonl: file not found" in res.output


def test_later_round_sees_earlier_accepted_and_dry_run(run_dir):
    import shutil

    filter_run(Run.open(run_dir), 1, metrics=False)
    r2 = Run.open(run_dir).round_dir(2)
    r2.mkdir(exist_ok=True)
    shutil.copytree(Run.open(run_dir).round_dir(1) / "model", r2 / "model", dirs_exist_ok=True)
    write_jsonl(
        r2 / "candidates.jsonl",
        [
            candidate(0, "My card still hasn't shown up, when will it arrive?", "card_arrival", round=2),
            candidate(
                1, "Is there a charge for withdrawing cash at a foreign ATM?", "cash_withdrawal_charge"
            ),
        ],
    )
    result = filter_run(Run.open(run_dir), write=False, metrics=False)  # latest round with candidates: 2
    assert result.report["round"] == 2 and result.directory is None
    assert not (r2 / "decisions.jsonl").exists()
    first = result.outcome.results[0]
    assert not first.accepted
    assert any("accepted in an earlier round" in d.reason for d in first.decisions)


def test_the_llm_judge_asks_the_runs_own_generator(run_dir):
    """``llm_judge`` in the order: filter_run builds the judge from the run's generator settings (the local
    Gemma through llama.cpp) and keeps its answers in the run's LLM cache."""
    pytest.importorskip("llama_cpp")
    run = Run.open(run_dir)
    config = run.config.filter.model_copy(update={"order": [*run.config.filter.order, "llm_judge"]})
    result = filter_run(run, 1, config=config, write=False, metrics=False)
    judged = [d for r in result.outcome.results for d in r.decisions if d.evaluator == "llm_judge"]
    assert len(judged) == 8  # every usable candidate is judged, dropped ones included
    codes = {d.code for d in judged}
    assert codes <= {"judge_agrees", "judge_disagrees", "relabeled", "not_checked"}
    assert codes - {"not_checked"}, [d.reason for d in judged]  # the model answered
    assert run.llm_cache_path().exists()
