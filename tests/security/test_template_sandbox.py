"""Known Jinja SSTI payloads through every template entry point: rendering, loading a file, the chat's
``/edit-prompt`` and the web page's POST ``/api/chat``. Each must end in one clear ``TemplateError`` (or a
one-line chat error) and must never run anything: the marker file a payload would create stays absent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from activesynth.prompts import PromptTemplate, TemplateError, get_template, load_template
from tests.security.conftest import FLASK_LIKE, PLACES, SSTI_PAYLOADS, paused, post_json, template_file

VARS = {
    "task": "Messages that customers send to their bank",
    "label_text": "card arrival",
    "examples": ["Where is my card?", "My card has not come yet", "Card still not here"],
}


def _app():  # a function whose globals hold ``os`` and ``subprocess``: what a careless ``request`` exposes
    return os, subprocess


class _Config(dict):  # a dict subclass written in Python, like a web framework's config object
    def __init__(self, **kw) -> None:
        super().__init__(**kw)


def _variables(t: PromptTemplate) -> dict:
    extra = {"request": SimpleNamespace(application=_app), "config": _Config(DEBUG=True)}
    return {v: VARS.get(v, extra.get(v, "x")) for v in t.variables}


def _one_line(exc: BaseException) -> None:
    msg = str(exc)
    assert msg and "\n" not in msg and "Traceback" not in msg, msg


@pytest.mark.parametrize("where", PLACES)
@pytest.mark.parametrize("name", sorted(SSTI_PAYLOADS))
def test_payload_fails_at_load_or_render_and_runs_nothing(tmp_path, name, where):
    marker = tmp_path / "pwned"
    path = tmp_path / "mine.jinja2"
    path.write_text(template_file(SSTI_PAYLOADS[name], where, marker), encoding="utf-8")
    with pytest.raises(TemplateError) as err:
        t = load_template(path)
        t.render(**_variables(t))
    _one_line(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("name", sorted(SSTI_PAYLOADS))
def test_payload_through_get_template_of_a_kept_version(tmp_path, name):
    marker = tmp_path / "pwned"
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "self_instruct_list@0123456789ab.jinja2").write_text(
        template_file(SSTI_PAYLOADS[name], "for_examples", marker), encoding="utf-8"
    )
    with pytest.raises(TemplateError) as err:
        t = get_template(str(kept / "self_instruct_list@0123456789ab.jinja2"))
        t.render(**_variables(t))
    _one_line(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("name", sorted(SSTI_PAYLOADS))
def test_payload_in_a_template_object_built_by_hand(tmp_path, name):
    # a PromptTemplate made without load_template (no load-time check) still renders only in the sandbox
    marker = tmp_path / "pwned"
    source = template_file(SSTI_PAYLOADS[name], "if_examples", marker)
    base = get_template("self_instruct_list")
    t = PromptTemplate(
        name="x", mode="completion", family="list", description="", version="0" * 64, path=tmp_path / "x",
        source=source, variables=tuple(sorted({*base.variables, *FLASK_LIKE})),
    )  # fmt: skip
    with pytest.raises(TemplateError) as err:
        t.render(**_variables(t))
    _one_line(err.value)
    assert not marker.exists()


def test_prompts_render_command_runs_nothing(tmp_path):
    """``activesynth prompts render FILE`` (the path that ran a shell command in the report)."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.jinja2"
    path.write_text(template_file(SSTI_PAYLOADS["mro_popen"], "if_examples", marker), encoding="utf-8")
    variables = tmp_path / "vars.json"
    variables.write_text(json.dumps(VARS), encoding="utf-8")
    out = subprocess.run(
        [
            str(Path(sys.executable).with_name("activesynth")),
            "prompts", "render", str(path), "--vars", str(variables),
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode != 0
    assert "Traceback" not in out.stderr + out.stdout
    assert not marker.exists()


def test_sandbox_still_renders_the_packaged_templates():
    for name in ("self_instruct_list", "contrastive_pair", "evol_in_depth_list"):
        t = get_template(name)
        assert "card arrival" in t.render(**_variables(t) | {"n": 3}).text


# -- the chat: /edit-prompt ----------------------------------------------------------------------------------


def _kept(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "r1" / "prompts").glob("*.jinja2"))


@pytest.mark.parametrize("where", PLACES)
@pytest.mark.parametrize("name", sorted(SSTI_PAYLOADS))
def test_edit_prompt_refuses_payload(run_root, tmp_path, name, where):
    from activesynth.agent.chat.session import ChatSession
    from activesynth.agent.chat.store import RunStore, StoreError

    marker = tmp_path / "pwned"
    source = template_file(SSTI_PAYLOADS[name], where, marker)
    before = _kept(run_root)
    with pytest.raises(StoreError) as err:
        RunStore(run_root).edit_prompt("r1", "self_instruct_list", source)
    _one_line(err.value)
    session = ChatSession(run_root, model=None)
    reply = session.handle(f"/edit-prompt self_instruct_list --run r1\n{source}")
    assert reply.startswith("error:") and "\n" not in reply.strip(), reply
    assert _kept(run_root) == before
    from activesynth.agent.runs import Run

    assert not Run.open(run_root / "r1").get_state("control.overrides")
    assert not marker.exists()


def test_edit_prompt_preview_uses_real_looking_variables(run_root):
    """A harmless edit still works, and its preview shows examples and the label (the branches ran)."""
    from activesynth.agent.chat.store import RunStore

    base = get_template("self_instruct_list")
    source = base.source.replace("real message", "genuine message")
    res = RunStore(run_root).edit_prompt("r1", "self_instruct_list", source)
    assert res["changed"] and "genuine message" in res["preview"]
    assert "1. " in res["preview"] and "2. " in res["preview"]  # the examples loop ran with examples


def test_edit_prompt_takes_a_template_name_not_a_file(run_root, tmp_path):
    """The name picks a packaged template or a kept version; a path to a file elsewhere is refused."""
    from activesynth.agent.chat.store import RunStore, StoreError

    outside = tmp_path / "elsewhere.jinja2"
    outside.write_text("{#- ---\nmode: completion\n--- -#}\nsecret {{ examples }}", encoding="utf-8")
    with pytest.raises(StoreError):
        RunStore(run_root).edit_prompt("r1", str(outside), "{#- ---\nmode: completion\n--- -#}\nx")


# -- the web page: POST /api/chat ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SSTI_PAYLOADS))
def test_payload_through_the_web_chat(run_root, tmp_path, serve, name):
    marker = tmp_path / "pwned"
    served = serve(run_root)
    token = served.page_token()
    before = _kept(run_root)
    for where in PLACES:
        source = template_file(SSTI_PAYLOADS[name], where, marker)
        r = post_json(served, f"/edit-prompt self_instruct_list --run r1\n{source}", token)
        assert r.status == 200, r.text
        assert json.loads(r.body)["reply"].startswith("error:")
    assert _kept(run_root) == before and not paused(run_root)
    assert not marker.exists()
