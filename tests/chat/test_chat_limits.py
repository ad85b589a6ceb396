"""What the chat (and so a chat model or the web page) may change in a run: the settings of rounds, filters,
planning and sampling, and templates by name; never data files, caches, models, servers or tracking stores,
which name paths and addresses outside the run store."""

from __future__ import annotations

import pytest

from activesynth.agent.chat.session import ChatSession
from activesynth.agent.runs import Run


@pytest.mark.parametrize(
    "change",
    [
        "data.train=/etc/passwd",
        "data.dataset=hwu64",
        "generate.cache_path=/tmp/elsewhere.sqlite",
        "embed.cache_dir=/tmp/elsewhere",
        "generate.backend.base_url=http://attacker.example/v1",
        "generate.backend.model=/tmp/evil.gguf",
        "tracking.tracking_uri=http://attacker.example",
        "generate.planner.templates.list=/etc/evil.jinja2",
        "generate.planner.templates.list=../../evil",
        "filter.llm_judge.backend.kind=openai",
        "filter.llm_judge.backend.base_url=http://attacker.example/v1",
        "filter.llm_judge={backend: {kind: openai, base_url: 'http://attacker.example/v1'}}",
        "filter={llm_judge: {backend: {kind: local, model: /tmp/evil.gguf}}}",
        "filter.likelihood.model=/tmp/evil.gguf",
        "filter.llm_judge.template=/etc/evil.jinja2",
        "filter.likelihood.template=../evil",
        "filter.leakage_guard=false",
        "generate.planner={templates: {list: /etc/evil.jinja2}}",
    ],
)
def test_chat_cannot_point_a_run_elsewhere(store_copy, change):
    session = ChatSession(store_copy, model=None)
    reply = session.handle(f"/set {change} --run tiny")
    assert reply.startswith("error:") and len(reply.splitlines()) == 1, reply
    assert not Run.open(store_copy / "tiny").get_state("control.overrides")


def test_chat_changes_what_it_may(store_copy):
    session = ChatSession(store_copy, model=None)
    changes = (
        "loop.budget=30 filter.rouge_l.max_f=0.8 generate.planner.templates.list=self_instruct_list "
        "filter.llm_judge.rivals=3"
    )
    reply = session.handle(f"/set {changes} --run tiny")
    assert not reply.startswith("error"), reply
    pending = Run.open(store_copy / "tiny").get_state("control.overrides")
    assert pending == {
        "loop.budget": 30,
        "filter.rouge_l.max_f": 0.8,
        "generate.planner.templates.list": "self_instruct_list",
        "filter.llm_judge.rivals": 3,
    }


@pytest.mark.parametrize(
    "changes",
    [
        {"filter.llm_judge": {"backend": {"kind": "openai", "base_url": "http://attacker.example/v1"}}},
        {"filter": {"likelihood": {"model": "/tmp/evil.gguf"}}},
        {"generate.planner": {"templates": {"list": "/etc/evil.jinja2"}}},
        {"filter.llm_judge.template": "../evil"},
    ],
)
def test_a_whole_section_cannot_carry_a_forbidden_setting(changes):
    from activesynth.agent.chat.store import StoreError
    from activesynth.agent.chat.tools import check_chat_changes

    with pytest.raises(StoreError):
        check_chat_changes(changes)
    check_chat_changes({"filter.llm_judge": {"rivals": 2, "template": "judge_choice"}})  # allowed
