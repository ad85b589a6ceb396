"""The data/ folder: its example config and file work as documented; every built-in dataset has a card and a
seed task."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_example_config_loads_its_data(monkeypatch):
    from activesynth.agent.config import load_config
    from activesynth.agent.datasets import load
    from activesynth.agent.loop import check_config

    monkeypatch.chdir(ROOT)  # the config's paths are relative to the repository, as the README runs it
    cfg = load_config(ROOT / "data" / "examples" / "intents.yaml")
    check_config(cfg)
    ds = load(cfg.data)
    assert len(ds.labels) == 4 and len(ds.train) == 4 * 5
    assert ds.select is not None and len(ds.select) >= 4


def test_every_builtin_has_a_card_and_a_seed_task():
    from activesynth.agent.datasets import BUILTINS

    tasks = {json.loads(line)["id"] for line in (ROOT / "data" / "seed_tasks.jsonl").read_text().splitlines()}
    for name in BUILTINS:
        assert (ROOT / "data" / "cards" / f"{name}.md").is_file(), name
        assert name in tasks, name
