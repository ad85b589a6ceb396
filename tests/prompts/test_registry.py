"""The prompt registry: metadata, versions, strict rendering, chat messages, kept versions."""

from __future__ import annotations

import hashlib

import pytest

from activesynth.prompts import TemplateError, get_template, list_templates, load_template, snapshot

REQUIRED = {
    "self_instruct_list",
    "self_instruct_chat",
    "contrastive_pair",
    "contrastive_pair_list",
    "evol_in_depth",
    "evol_in_depth_list",
    "evol_in_breadth",
}

VARS = {
    "task": "Messages that customers send to their bank",
    "label_text": "card arrival",
    "label_definition": "is about a card that has not arrived",
    "cluster_description": "keywords card, arrive",
    "examples": ["Where is my card?", "My card has not come yet"],
    "contrast_label_text": "card delivery estimate",
    "contrast_examples": ["How long does delivery take?"],
    "source_text": "still no card",
    "method_instruction": "says it indirectly",
    "n": 3,
}


def test_every_template_has_metadata_and_sha256_version():
    templates = {t.name: t for t in list_templates()}
    assert set(templates) >= REQUIRED
    for t in templates.values():
        assert t.mode in ("completion", "chat")
        assert t.version == hashlib.sha256(t.path.read_bytes()).hexdigest()
        assert t.ref == f"{t.name}@{t.version[:12]}"
        assert t.variables and "examples" in t.variables
        assert t.description
    assert templates["self_instruct_list"].mode == "completion"
    assert templates["self_instruct_chat"].mode == "chat"


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_template_renders(name):
    t = get_template(name)
    r = t.render(**{k: VARS[k] for k in t.variables})
    assert "card arrival" in r.text
    assert "Where is my card?" in r.text
    if t.mode == "chat":
        assert [m["role"] for m in r.messages] == ["system", "user"]
        assert all(m["content"].strip() for m in r.messages)
    else:
        assert r.prompt and r.messages is None


def test_list_template_ends_in_an_open_item():
    t = get_template("self_instruct_list")
    out = t.render(**{k: VARS[k] for k in t.variables}).prompt
    assert out.endswith("\n3.")
    assert "1. Where is my card?\n2. My card has not come yet\n3." in out


def test_missing_variable_is_an_error():
    t = get_template("self_instruct_chat")
    with pytest.raises(TemplateError, match="needs variables"):
        t.render(task="x")


def test_strict_undefined_inside_the_template(tmp_path):
    path = tmp_path / "mine.jinja2"
    path.write_text("{#- ---\nmode: completion\n--- -#}\n{{ examples.first }} {{ examples }}")
    t = load_template(path)
    with pytest.raises(TemplateError, match="cannot render"):
        t.render(examples={"second": 1})


def test_bad_files_are_rejected(tmp_path):
    no_header = tmp_path / "a.jinja2"
    no_header.write_text("hello {{ x }}")
    with pytest.raises(TemplateError, match="metadata header"):
        load_template(no_header)
    bad_mode = tmp_path / "b.jinja2"
    bad_mode.write_text("{#- ---\nmode: poem\n--- -#}\nhi")
    with pytest.raises(TemplateError, match="mode"):
        load_template(bad_mode)
    with pytest.raises(TemplateError, match="unknown template"):
        get_template("no_such_template")
    bad_stop = tmp_path / "c.jinja2"
    bad_stop.write_text('{#- ---\nmode: completion\nstop: "\\n"\n--- -#}\nhi')
    with pytest.raises(TemplateError, match="stop must be a list"):
        load_template(bad_stop)


def test_errors_are_one_line_and_globals_are_not_variables(tmp_path):
    bad = tmp_path / "d.jinja2"
    bad.write_text("{#- ---\nmode: completion\n--- -#}\nfine\n{% for x in examples %}{{ x }\n")
    with pytest.raises(TemplateError, match=r"line 5: unexpected") as err:
        load_template(bad)
    assert "\n" not in str(err.value)
    ok = tmp_path / "e.jinja2"
    ok.write_text(
        "{#- ---\nmode: completion\n--- -#}\n{% for i in range(n) %}{{ examples[i] }}\n{% endfor %}"
    )
    t = load_template(ok)
    assert t.variables == ("examples", "n")  # range is the sandbox's (capped), not a variable to pass
    assert t.render(examples=["a", "b"], n=2).prompt == "a\nb\n"


def test_completion_templates_say_where_their_output_ends():
    # a list ends at a blank line (the parser stops there too); a rewrite before the next "Original:"
    assert get_template("self_instruct_list").stop == ("\n\n",)
    assert "\nOriginal:" in get_template("evol_in_depth_list").stop
    assert get_template("self_instruct_chat").stop == ()


def test_versions_are_kept_and_never_overwritten(tmp_path):
    t = get_template("self_instruct_list")
    kept = snapshot(t, tmp_path)
    assert kept.name == f"{t.ref}.jinja2"
    kept_bytes = kept.read_bytes()
    # an edited copy of the template is a new version next to the old one
    edited = tmp_path / "work" / "self_instruct_list.jinja2"
    edited.parent.mkdir()
    edited.write_text(t.source.replace("real message", "genuine message"))
    t2 = load_template(edited)
    assert t2.name == t.name and t2.version != t.version
    kept2 = snapshot(t2, tmp_path)
    assert kept2 != kept and kept.read_bytes() == kept_bytes
    assert snapshot(t2, tmp_path).read_bytes() == kept2.read_bytes()
    # both versions resolve by name@sha12 from the folder, and list_templates shows both
    assert get_template(t2.ref, [tmp_path]).version == t2.version
    assert get_template(t.ref, [tmp_path]).version == t.version
    refs = {x.ref for x in list_templates([tmp_path])}
    assert {t.ref, t2.ref} <= refs
    # a path works too
    assert get_template(str(kept2)).version == t2.version


def test_unknown_version_is_an_error(tmp_path):
    with pytest.raises(TemplateError):
        get_template("self_instruct_list@000000000000", [tmp_path])


def test_generation_modules_import_no_heavy_library():
    import subprocess
    import sys

    code = (
        "import sys, activesynth.prompts, activesynth.agent.llm, activesynth.agent.planner, "
        "activesynth.agent.synthesize, activesynth.agent.cli.generate\n"
        "heavy = [m for m in ('torch', 'transformers', 'openai', 'vllm', 'llama_cpp') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
