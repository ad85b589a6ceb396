"""Slash commands for real on a tiny run folder; control flags, overrides and prompt edits in the run."""

from __future__ import annotations

import json

import pytest

from activesynth.agent import control
from activesynth.agent.chat.manager import RunManager
from activesynth.agent.chat.session import NO_MODEL, ChatSession
from activesynth.agent.chat.store import RunStore, StoreError
from activesynth.agent.control import is_approved, should_pause, should_stop
from activesynth.agent.runs import Run
from tests.chat.conftest import INJECTION


def _session(root, **kw):
    return ChatSession(root, manager=RunManager(mode="thread", **kw), model=None)


def test_read_commands(tiny_store):
    s = _session(tiny_store)
    runs = s.handle("/runs")
    assert "tiny" in runs and "active" in runs and "done" in runs
    status = s.handle("/status tiny")
    assert status.startswith("run tiny: done") and "final test accuracy" in status
    report = s.handle("/report")
    assert "round 1" in report and "confused pairs" in report and "clusters" in report
    cluster = s.handle("/cluster 0")
    assert cluster.startswith("cluster 0 of tiny") and "examples" in cluster
    rejected = s.handle("/samples rejected --limit 100")
    assert "[rejected]" in rejected and "quality: meta reply" in rejected
    assert json.dumps(INJECTION) in rejected  # shown as a quoted literal
    accepted = s.handle("/samples accepted --limit 3")
    assert "[rejected]" not in accepted and accepted.count("[accepted]") <= 3
    assert "self_instruct_list@" in s.handle("/prompts")
    assert "accuracy" in s.handle("/compare tiny tiny")
    assert s.handle("what is the status?") == NO_MODEL
    assert "/samples" in s.handle("/help")


def test_errors_are_one_line(tiny_store):
    s = _session(tiny_store)
    assert s.handle("/status nope").startswith("error: no run 'nope'")
    assert s.handle("/status ../..").startswith("error: run id '../..' leaves the run store")
    assert s.handle("/cluster 99").startswith("error: no cluster 99")
    assert s.handle("/samples weird").startswith("error: kind")
    assert s.handle("/start --config ../../etc/passwd").startswith("error:")
    assert s.handle("/frobnicate").startswith("unknown command")


def test_control_commands_change_the_run(store_copy):
    s = _session(store_copy)
    run = Run.open(store_copy / "tiny")
    assert not should_pause(run) and not should_stop(run) and is_approved(run, 1) is None
    assert "pause requested" in s.handle("/pause tiny")
    assert should_pause(run)
    assert "batch approved" in s.handle("/approve 1 --note 'looks good'")
    assert is_approved(run, 1) is True
    assert "batch rejected" in s.handle("/reject 1")
    assert is_approved(run, 1) is False
    assert "stop requested" in s.handle("/stop")
    assert should_stop(run) and not should_pause(run)
    status = s.handle("/status")
    assert "stop requested" in status and "control: stop requested" in status


def test_set_config_is_validated(store_copy):
    s = _session(store_copy)
    run = Run.open(store_copy / "tiny")
    out = s.handle("/set loop.budget=50 loop.rounds=3 --run tiny")
    assert "next round uses" in out
    assert control.apply_overrides(run).loop.budget == 50
    assert run.get_state("control.overrides") == {"loop.budget": 50, "loop.rounds": 3}
    assert s.handle("/set loop.budget=-1").startswith("error: loop.budget")
    assert s.handle("/set loop.nonsense=1").startswith("error: loop.nonsense")
    assert run.get_state("control.overrides") == {"loop.budget": 50, "loop.rounds": 3}


def test_edit_prompt_saves_a_version_and_selects_it(store_copy):
    from activesynth.prompts import get_template

    s = _session(store_copy)
    base = get_template("self_instruct_list")
    new_source = base.source.replace("Each line below", "Every line below")
    out = s.handle("/edit-prompt self_instruct_list\n" + new_source)
    assert out.startswith("saved self_instruct_list@") and "+" in out and "Every line below" in out
    ref = out.split()[1]
    assert (store_copy / "tiny" / "prompts" / f"{ref}.jinja2").read_text() == new_source
    run = Run.open(store_copy / "tiny")
    assert control.apply_overrides(run).generate.planner.templates == {"list": ref}
    # the sandbox refuses attribute games; unknown variables are refused
    evil = base.source + "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    assert "sandbox" in s.handle("/edit-prompt self_instruct_list\n" + evil)
    assert "unknown variables" in s.handle("/edit-prompt self_instruct_list\n" + base.source + "{{ secret }}")
    assert "metadata header" in s.handle("/edit-prompt self_instruct_list\nno header")


def test_store_refuses_paths_outside(tiny_store):
    st = RunStore(tiny_store)
    for bad in ("../x", "/etc", "tiny/../../x"):
        with pytest.raises(StoreError):
            st.resolve(bad)
    with pytest.raises(StoreError):
        st.file("tiny", "config.yaml")
    assert st.file("tiny", "round-01/plots/cluster_map.png").is_file()


def test_start_runs_in_background_and_stops(store_copy):
    """A real run started from chat (budget 0: report, final evaluation) finishes; a stopped one stops."""
    s = _session(store_copy)
    out = s.handle("/start --config tiny.yaml --id bg --arm real-only")
    assert out.startswith("run bg: started")
    mgr = s.box.manager
    mgr.wait(store_copy / "bg", 120)
    run = Run.open(store_copy / "bg")
    assert run.record()["state"] == "done", run.events()
    assert any(e["stage"] == "progress" for e in run.events())
    assert "run bg: done" in s.handle("/status bg")
    # stop before the first stage: the worker stops at its first progress line
    s.handle("/start --config tiny.yaml --id st")
    control.request_stop(Run.open(store_copy / "st"))  # may race the start; a stop is a stop either way
    mgr.wait(store_copy / "st", 120)
    state = Run.open(store_copy / "st").record()["state"]
    assert state in ("stopped", "done")
    assert not Run.is_busy(store_copy / "st")


def test_worker_process(store_copy):
    """The default manager runs the loop in a separate process (``python -m agent.chat.worker``); a
    terminated worker records the run as stopped, and /resume continues it in a new process."""
    import time

    s = ChatSession(store_copy, manager=RunManager(mode="process"), model=None)
    out = s.handle("/start --config tiny.yaml --id proc --arm real-only")
    assert "started (pid" in out
    run = Run.open(store_copy / "proc")
    control.request_pause(run)  # usually lands before the first stage; the run may also just finish
    deadline = time.time() + 60
    while run.record()["state"] not in ("paused", "done") and time.time() < deadline:
        time.sleep(0.2)
    if run.record()["state"] == "paused":
        assert s.box.manager.kill(run.path)
        assert run.record()["state"] == "stopped" and not Run.is_busy(run.path)
        assert "started (pid" in s.handle("/resume proc")
    s.box.manager.wait(run.path, 120)
    log = (store_copy / "proc" / "worker.log").read_text()[-2000:]
    assert run.record()["state"] == "done", log
    assert [e for e in run.events() if e["stage"] == "start"][0]["message"].startswith("worker pid")


def test_pause_holds_the_worker_until_resumed(store_copy, small_files, embed_cache):
    import time

    from activesynth.agent.config import RunConfig
    from tests.chat.conftest import tiny_config

    run = Run.create(
        store_copy / "pz", RunConfig.model_validate(tiny_config(small_files, embed_cache, budget=0))
    )
    control.request_pause(run)
    s = _session(store_copy)
    s.box.manager.launch(run.path)
    deadline = time.time() + 30
    while run.record()["state"] != "paused" and time.time() < deadline:
        time.sleep(0.1)
    assert run.record()["state"] == "paused" and Run.is_busy(run.path)
    assert "resumed" in s.handle("/resume pz")
    s.box.manager.wait(run.path, 60)
    assert run.record()["state"] == "done"


def test_filter_thresholds_for_the_next_round(store_copy):
    s = _session(store_copy)
    assert "next round uses" in s.handle("/set filter.rouge_l.max_f=0.8 filter.label_agreement.min_prob=0.2")
    cfg = control.apply_overrides(Run.open(store_copy / "tiny"))
    assert cfg.filter.rouge_l.max_f == 0.8 and cfg.filter.label_agreement.min_prob == 0.2


def test_comparison_folder_curves_per_arm(store_copy):
    import shutil

    for arm in ("active", "real-only"):
        shutil.copytree(store_copy / "tiny", store_copy / "cmp" / "seed-0" / arm)
    (store_copy / "cmp" / "comparison.json").write_text(json.dumps({"table": {"active": {}}}))
    st = RunStore(store_copy)
    assert {"id": "cmp", "kind": "comparison", "state": "done"} in st.list_runs()
    assert "cmp/seed-0/active" in [r["id"] for r in st.list_runs()]
    curves = st.curves("cmp")
    assert [s["name"] for s in curves["series"]] == ["seed-0/active", "seed-0/real-only"]
    assert all(len(s["points"]) == 2 for s in curves["series"]) and curves["table"] == {"active": {}}
    assert "accuracy" in _session(store_copy).handle("/compare cmp/seed-0/active cmp/seed-0/real-only")
