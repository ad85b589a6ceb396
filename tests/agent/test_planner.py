"""The planner: allocation rules, template choice, modes, spread, PII, no test texts, editable plans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activesynth.agent.config import PlannerConfig
from activesynth.agent.planner import Plan, Planner, allocate, examples_from_dataset

DATA = Path(__file__).resolve().parents[1] / "prompts" / "data"


@pytest.fixture
def report():
    return json.loads((DATA / "uncertainty_report.json").read_text())


@pytest.fixture
def examples():
    return json.loads((DATA / "examples.json").read_text())["train"]


COUNTS = {
    "card_arrival": 40,
    "card_delivery_estimate": 40,
    "lost_or_stolen_card": 40,
    "exchange_rate": 40,
    "card_payment_fee_charged": 40,
    "top_up_failed": 40,
    "pending_top_up": 40,
    "transfer_not_received_by_recipient": 3,
}


@given(
    scores=st.lists(st.floats(0, 100, allow_nan=False), min_size=0, max_size=20),
    total=st.integers(0, 500),
    floor=st.integers(0, 10),
    cap=st.integers(1, 80),
)
@settings(max_examples=200, deadline=None)
def test_allocate_respects_budget_floor_and_cap(scores, total, floor, cap):
    out = allocate(scores, total, floor, cap)
    assert len(out) == len(scores)
    assert sum(out) <= total
    positive = [s for s in scores if s > 0]
    for s, n in zip(scores, out, strict=True):
        assert n == 0 or (min(floor, cap) <= n <= cap) or (n < floor and len([x for x in out if x]) == 1)
        if s <= 0:
            assert n == 0
    # nothing is left over unless every unit that got texts is at its cap or the floor excluded units
    if positive and sum(out) < total:
        active = [n for n in out if n]
        assert all(n == cap for n in active) or len(active) < len(positive)


def test_allocate_is_proportional_and_monotone():
    out = allocate([4.0, 2.0, 1.0, 1.0], 80, floor=2, cap=100)
    assert sum(out) == 80 and out[0] >= out[1] >= out[2] and out[2] == out[3]
    assert abs(out[0] / out[1] - 2) < 0.2
    assert allocate([5, 1], 100, 2, 10) == [10, 10]  # caps leave the rest unallocated
    assert allocate([3, 2, 1], 8, 4, 10) == [4, 4, 0]  # the floor keeps the weakest unit out


def test_targeted_plan_picks_templates_by_unit(report, examples):
    plan = Planner(PlannerConfig(n_texts=60, floor=3, cap=20, spread=0.2)).plan(
        report, examples, COUNTS, round_index=1
    )
    assert plan.total_texts == 60 and plan.unallocated == 0 and plan.round == 1
    fam = {
        (i.label, i.cluster, tuple(i.pair or ())): i.family
        for i in plan.items
        if not i.reason.startswith("spread")
    }
    assert fam[("card_arrival", None, ("card_arrival", "card_delivery_estimate"))] == "contrastive"
    # hard cluster 0 has real uncertain card_arrival texts to rewrite -> evol in-depth
    assert fam[("card_arrival", 0, ())] == "evol_depth"
    # the sparse class gets the list template even for its confused pair
    assert (
        fam[
            (
                "transfer_not_received_by_recipient",
                None,
                ("transfer_not_received_by_recipient", "pending_top_up"),
            )
        ]
        == "list"
    )
    # the calm cluster 2 gets the list template
    assert fam[("exchange_rate", 2, ())] == "list"
    evol = next(i for i in plan.items if i.family == "evol_depth")
    assert evol.source_texts and evol.methods and evol.template == "evol_in_depth_list"
    assert evol.n_samples == evol.n_texts  # one rewrite per completion
    contrast = next(i for i in plan.items if i.family == "contrastive")
    assert contrast.contrast_examples and contrast.template == "contrastive_pair_list"
    # the most uncertain unit gets the most texts
    by_score = sorted((i for i in plan.items if i.score), key=lambda i: -i.score)
    assert by_score[0].n_texts == max(i.n_texts for i in by_score)
    # uncertain gold texts of the cluster come first among the examples
    cluster0 = next(i for i in plan.items if i.cluster == 0 and i.label == "card_arrival")
    gold0 = [e["text"] for e in report["clusters"][0]["examples"] if e["gold"] == "card_arrival"]
    assert cluster0.examples[: len(gold0)] == gold0


def test_spread_gives_every_class_something(report, examples):
    labels = report["dataset"]["labels"]
    spread = Planner(PlannerConfig(n_texts=80, spread=0.25)).plan(report, examples, COUNTS)
    assert set(spread.by_label()) == set(labels)
    narrow = Planner(PlannerConfig(n_texts=80, spread=0.0)).plan(report, examples, COUNTS)
    assert "lost_or_stolen_card" not in narrow.by_label()
    assert narrow.total_texts == 80


def test_untargeted_is_uniform(report, examples):
    plan = Planner(PlannerConfig(n_texts=43, mode="untargeted")).plan(report, examples, COUNTS)
    counts = plan.by_label()
    assert sum(counts.values()) == 43 and max(counts.values()) - min(counts.values()) <= 1
    assert {i.family for i in plan.items} == {"list"}


def test_rebalance_tops_up_small_classes(report, examples):
    plan = Planner(PlannerConfig(n_texts=60, mode="rebalance", spread=0.0, cap=50)).plan(
        report, examples, COUNTS
    )
    assert plan.by_label() == {
        "transfer_not_received_by_recipient": 37
    }  # up to the largest class, capped by gap
    assert plan.unallocated == 23


def test_chat_style_and_template_overrides(report, examples):
    cfg = PlannerConfig(n_texts=40, style="chat", templates={"list": "evol_in_breadth"})
    plan = Planner(cfg).plan(report, examples, COUNTS)
    templates = {i.family: i.template for i in plan.items}
    assert templates["contrastive"] == "contrastive_pair"
    assert templates["evol_depth"] == "evol_in_depth"
    assert templates["list"] == "evol_in_breadth"
    item = next(i for i in plan.items if i.family == "contrastive")
    assert item.n_samples == -(-item.n_texts // cfg.texts_per_prompt)


def test_examples_are_scrubbed(report, examples):
    examples = {k: list(v) for k, v in examples.items()}
    examples["exchange_rate"].insert(0, "mail me at jane.doe@example.com about the rate")
    plan = Planner(PlannerConfig(n_texts=80, spread=1.0, mode="untargeted")).plan(report, examples, COUNTS)
    texts = [t for i in plan.items for t in i.examples]
    assert not any("jane.doe@example.com" in t for t in texts)
    assert any("[EMAIL]" in t for t in texts)


def test_report_with_test_texts_is_refused(report, examples):
    report["selected"][0]["split"] = "test"
    with pytest.raises(ValueError, match="test"):
        Planner().plan(report, examples)


def test_wrong_schema_is_refused(report):
    report["schema_version"] = 2
    with pytest.raises(ValueError, match="schema_version"):
        Planner().plan(report)


class _Split:
    def __init__(self, texts, labels):
        self.texts, self.labels = texts, labels


class _Sealed:
    """Like agent.datasets.SealedSplit: touching its texts is a bug."""

    @property
    def texts(self):
        raise AssertionError("test texts must never be read for prompts")

    def reveal(self, purpose):
        raise AssertionError("test texts must never be revealed for prompts")


class _Dataset:
    def __init__(self):
        self.train = _Split(["a card text", "call me on +44 20 7946 0958"], ["card_arrival", "exchange_rate"])
        self.dev = _Split(["dev text"], ["card_arrival"])
        self.pool = _Split(["pool text"], None)
        self.test = _Sealed()


def test_examples_come_from_train_and_dev_only():
    ex = examples_from_dataset(_Dataset())
    assert ex == {"card_arrival": ["a card text", "dev text"], "exchange_rate": ["call me on [PHONE]"]}


def test_plan_round_trips_and_validates_edits(tmp_path, report, examples):
    plan = Planner(PlannerConfig(n_texts=30)).plan(report, examples, COUNTS)
    path = plan.save(tmp_path / "generation_plan.json")
    data = json.loads(path.read_text())
    data["items"][0]["n_texts"] = 11
    data["items"][0]["template"] = "self_instruct_chat"
    path.write_text(json.dumps(data))
    edited = Plan.load(path)
    assert edited.items[0].n_texts == 11 and edited.items[0].template == "self_instruct_chat"
    data["items"][0]["n_textz"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError):
        Plan.load(path)


def test_family_weights_move_the_budget_between_template_families(report, examples):
    def by_family(plan):
        out: dict[str, int] = {}
        for i in plan.items:
            if not i.reason.startswith("spread"):
                out[i.family] = out.get(i.family, 0) + i.n_texts
        return out

    cfg = PlannerConfig(n_texts=120, floor=2, cap=40, spread=0.2)
    plain = by_family(Planner(cfg).plan(report, examples, COUNTS))
    weights = {"contrastive": 0.25, "list": 2.0}
    shifted_plan = Planner(cfg.model_copy(update={"family_weights": weights})).plan(report, examples, COUNTS)
    shifted = by_family(shifted_plan)
    assert shifted_plan.total_texts == 120  # the same budget, shared out differently
    assert shifted["contrastive"] < plain["contrastive"] and shifted["list"] > plain["list"]
    assert shifted["contrastive"] > 0  # a down-weighted family keeps some texts (its units keep the floor)
    assert shifted_plan.config["family_weights"] == weights  # the plan records what shaped it
    same = Planner(cfg.model_copy(update={"family_weights": {"evol_breadth": 1.0}})).plan(
        report, examples, COUNTS
    )
    assert by_family(same) == plain
