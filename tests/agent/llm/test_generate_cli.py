"""`activesynth generate` and `activesynth prompts ...` on a real run folder."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from activesynth.agent.cli import app

SECRET = "sk-cli-secret-42424242"


@pytest.fixture
def cli():
    runner = CliRunner()
    return lambda *args, **kw: runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"}, **kw)


def test_dry_run_prints_plan_and_prompts_without_a_model(cli, gen_run):
    run = gen_run()
    out = cli("generate", "--run", run.path, "--dry-run", "--texts", "12", "--show", "2")
    assert out.exit_code == 0, out.output
    assert "Generation plan" in out.output and "dry run: no model was called" in out.output
    assert "1." in out.output and "card" in out.output
    plan_path = run.round_dir(1) / "generation_plan.json"
    plan = json.loads(plan_path.read_text())
    assert sum(i["n_texts"] for i in plan["items"]) == 12
    assert not (run.round_dir(1) / "candidates.jsonl").exists()
    # an edited plan is reused as it is
    plan["items"] = plan["items"][:1]
    plan["items"][0]["n_texts"] = 3
    plan["items"][0]["n_samples"] = 0
    plan_path.write_text(json.dumps(plan))
    out = cli("generate", "--run", run.path, "--dry-run")
    assert out.exit_code == 0 and "reused" in out.output and "3 texts" in out.output


def test_generate_with_openai_backend_then_rerun_from_cache(cli, gen_run, fault_server, monkeypatch):
    run = gen_run()
    monkeypatch.setenv("TEST_LLM_KEY", SECRET)
    with fault_server(["429", "drop"], key=SECRET) as srv:
        args = [
            "generate",
            "--run",
            run.path,
            "--backend",
            "openai",
            "--model",
            "fake-model",
            "--base-url",
            srv.url,
            "--api-key-env",
            "TEST_LLM_KEY",
            "--texts",
            "10",
            "--style",
            "completion",
        ]
        out = cli(*args)
        assert out.exit_code == 0, out.output
        posts = srv.posts
        cands = [json.loads(x) for x in (run.round_dir(1) / "candidates.jsonl").read_text().splitlines()]
        assert cands and {c["backend"] for c in cands} == {"openai"}
        assert sum(c["status"] == "parsed" for c in cands) >= 1
        # re-running the step makes zero new calls
        out = cli(*args)
        assert out.exit_code == 0 and srv.posts == posts
        assert "cached" in out.output
    rec = run.record()
    assert rec["templates"] and all("@" in k for k in rec["templates"])
    kept = {p.name for p in (run.path / "prompts").iterdir()}
    assert {f"{k}.jinja2" for k in rec["templates"]} == kept
    usage = json.loads((run.path / "usage.json").read_text())
    assert usage["totals"]["cache_hits"] > 0 and usage["totals"]["calls"] > 0
    # the two transport retries (429, dropped link) are counted: usage.json matches what the server saw
    assert usage["totals"]["requests"] == posts == usage["totals"]["calls"] + 2
    assert usage["totals"]["transport_retries"] == 2
    for f in run.path.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f
    assert any(e["stage"] == "generate" for e in run.events())


def test_wrong_key_is_one_line_before_any_work(cli, gen_run, fault_server, monkeypatch):
    run = gen_run()
    monkeypatch.setenv("TEST_LLM_KEY", "wrong")
    with fault_server(key=SECRET) as srv:
        out = cli(
            "generate",
            "--run",
            run.path,
            "--backend",
            "openai",
            "--model",
            "fake-model",
            "--base-url",
            srv.url,
            "--api-key-env",
            "TEST_LLM_KEY",
            "--texts",
            "4",
        )
        assert out.exit_code == 2
        assert "authentication failed" in out.output and srv.posts == 0
        assert "Traceback" not in out.output
    assert not (run.round_dir(1) / "candidates.jsonl").exists()


def test_unset_api_key_env_is_one_line_before_any_request(cli, gen_run, fault_server, monkeypatch):
    """--api-key-env naming an unset variable on loopback used to send a placeholder key and go on."""
    run = gen_run()
    monkeypatch.delenv("UNSET_LLM_KEY", raising=False)
    with fault_server() as srv:
        out = cli(
            "generate",
            "--run",
            run.path,
            "--backend",
            "openai",
            "--model",
            "fake-model",
            "--base-url",
            srv.url,
            "--api-key-env",
            "UNSET_LLM_KEY",
            "--texts",
            "4",
        )
        assert out.exit_code == 2, out.output
        assert "UNSET_LLM_KEY" in out.output and "Traceback" not in out.output
        assert srv.posts == 0 and srv.gets == []
    assert not (run.round_dir(1) / "candidates.jsonl").exists()


def test_prompts_list_show_render(cli, gen_run, tmp_path):
    out = cli("prompts", "list")
    assert out.exit_code == 0 and "self_instruct_list@" in out.output and "contrastive_pair" in out.output
    out = cli("prompts", "show", "self_instruct_chat")
    assert out.exit_code == 0 and "mode=chat" in out.output and "[[user]]" in out.output
    variables = tmp_path / "vars.json"
    variables.write_text(json.dumps({"task": "T", "label_text": "card arrival", "examples": ["a", "b"]}))
    out = cli("prompts", "render", "self_instruct_list", "--vars", variables)
    assert out.exit_code == 0 and out.output.rstrip().endswith("3.")
    run = gen_run()
    out = cli("prompts", "render", "contrastive_pair", "--run", run.path, "--sample", "1")
    assert out.exit_code == 0 and "[user]" in out.output
    out = cli("prompts", "show", "nope")
    assert out.exit_code == 2 and "unknown template" in out.output


@pytest.mark.slow
def test_prompts_compare_on_a_real_server(cli, gen_run, llama_server, tmp_path):
    """Two template versions, same plan, seeds and model (SmolLM2 behind llama.cpp's server)."""
    run = gen_run(with_classifier=True)
    edited = tmp_path / "self_instruct_list.jinja2"
    from activesynth.prompts import get_template

    edited.write_text(get_template("self_instruct_list").source.replace("real message", "short message"))
    out = cli(
        "prompts",
        "compare",
        "self_instruct_list",
        edited,
        "--run",
        run.path,
        "--backend",
        "openai",
        "--model",
        "smollm2",
        "--base-url",
        llama_server,
        "--texts",
        "8",
        "--max-tokens",
        "16",
    )
    assert out.exit_code == 0, out.output
    summary_path = next((run.round_dir(1) / "compare").glob("*_vs_*.json"))
    summary = json.loads(summary_path.read_text())
    a, b = summary["versions"]
    assert a["template"] != b["template"] and a["template"].split("@")[0] == b["template"].split("@")[0]
    for v in (a, b):
        assert v["samples"] > 0 and v["completion_tokens"] > 0
        assert 0 <= v["acceptance_rate"] <= 1 and isinstance(v["drop_reasons"], dict)
        assert v["label_fidelity"] is None or 0 <= v["label_fidelity"] <= 1
        assert "selection_macro_f1" in v
    assert summary["selection_macro_f1_without_synthetic"] is not None
    # both versions are kept in the run
    kept = {p.name for p in (run.path / "prompts").iterdir()}
    assert {f"{a['template']}.jinja2", f"{b['template']}.jinja2"} <= kept
