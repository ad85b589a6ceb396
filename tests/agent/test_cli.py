import json
import subprocess
import sys

from typer.testing import CliRunner

from activesynth.agent.cli import app

runner = CliRunner()


def test_help_is_fast_and_lists_commands():
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import activesynth.agent.cli"],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines()}
    assert "activesynth.agent.cli" in loaded  # the check reads the import log at all
    heavy = [m for m in ("torch", "transformers", "faiss", "sentence_transformers") if m in loaded]
    assert not heavy, f"heavy imports at CLI start: {heavy}"
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("datasets", "report"):
        assert cmd in res.output


def test_datasets_lists_builtins():
    res = runner.invoke(app, ["datasets"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    for name in ("banking77", "hwu64", "clinc150", "rotten_tomatoes", "CC-BY-4.0"):
        assert name in res.output
    assert "9003" in res.output and "1032" in res.output


def test_report_command_on_user_files(tmp_path, small_files, embed_cache):
    out = tmp_path / "run"
    res = runner.invoke(
        app,
        [
            "report",
            "--train",
            str(small_files["train"]),
            "--dev",
            str(small_files["dev"]),
            "--test",
            str(small_files["test"]),
            "--out",
            str(out),
            "--clusters",
            "3",
            "--strategy",
            "entropy",
        ],
        env={"ACTIVESYNTH_CACHE": str(embed_cache), "COLUMNS": "160"},
    )
    assert res.exit_code == 0, res.output
    assert "macro F1" in res.output and "clusters of uncertain texts" in res.output
    rep = json.loads((out / "round-01" / "uncertainty_report.json").read_text())
    assert len(rep["clusters"]) == 3 and rep["strategy"] == "entropy"


def test_bad_input_is_one_line_without_traceback(tmp_path, small_files):
    bad = tmp_path / "train.csv"
    bad.write_text("text,label\nhello,a\n,b\n")
    res = runner.invoke(
        app,
        [
            "report",
            "--train",
            str(bad),
            "--dev",
            str(small_files["dev"]),
            "--test",
            str(small_files["test"]),
            "--out",
            str(tmp_path / "r"),
        ],
        env={"COLUMNS": "300"},
    )
    assert res.exit_code == 2
    assert "train.csv: line 3: empty text" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(
        app, ["report", "--dataset", "nope", "--out", str(tmp_path / "r2")], env={"COLUMNS": "300"}
    )
    assert res.exit_code == 2 and "unknown dataset 'nope'" in res.output
    res = runner.invoke(app, ["report", "--out", str(tmp_path / "r3")], env={"COLUMNS": "300"})
    assert res.exit_code == 2 and "no data" in res.output


def _files_args(files: dict) -> list[str]:
    return [arg for role in ("train", "dev", "test") for arg in (f"--{role}", str(files[role]))]


def test_efficiency_command_on_user_files(tmp_path, small_files, embed_cache, monkeypatch):
    import activesynth.agent.experiments.efficiency as loop
    from activesynth.agent.config import ReportConfig
    from activesynth.agent.llm.cache import CachedBackend, LLMCache
    from tests.fakes import EchoBackend

    fake = EchoBackend()
    backend = CachedBackend(fake, LLMCache(tmp_path / "llm.sqlite"))
    real_efficiency, seen = loop.efficiency, {}

    def fast(out, cfg, shots, seeds, progress=None, backend_=None):
        seen["cfg"] = cfg  # as the CLI built it; then trimmed for speed, with the scripted generator
        cfg = cfg.model_copy(
            update={
                "report": ReportConfig(n_clusters=3, plots=False),
                "loop": cfg.loop.model_copy(update={"robustness": False}),
            }
        )
        return real_efficiency(out, cfg, shots, seeds, progress=progress, backend=backend)

    monkeypatch.setattr(loop, "efficiency", fast)
    out = tmp_path / "eff"
    res = runner.invoke(
        app,
        ["efficiency", *_files_args(small_files), "--out", str(out)]
        + ["--shots", "2,4", "--seeds", "0", "--budget", "8", "--rounds", "1", "--no-pii-scrub"],
        env={"ACTIVESYNTH_CACHE": str(embed_cache), "COLUMNS": "200"},
    )
    assert res.exit_code == 0, res.output
    assert "Data efficiency" in res.output
    data = seen["cfg"].data
    assert data.dataset is None and data.train == small_files["train"] and data.test == small_files["test"]
    assert data.pii_scrub is False and data.selection_fraction == 0.5
    eff = json.loads((out / "efficiency.json").read_text())
    assert eff["shots"] == [2, 4] and eff["seeds"] == [0]
    assert set(eff["curves"]) == {"real-only", "active"} and set(eff["worth"]) == {"2", "4"}
    for curve in eff["curves"].values():
        assert set(curve) == {"2", "4"} and all(0 <= v <= 1 for v in curve.values())
    assert (out / "efficiency.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "shots-4" / "seed-0" / "active" / "summary.json").exists()
    assert fake.calls > 0  # the active arm generated with the scripted backend


def test_efficiency_needs_enough_texts_per_class(tmp_path, small_files):
    # small_files has 6 training texts per class: 10 shots cannot be sampled, before any run starts.
    out = tmp_path / "eff"
    res = runner.invoke(
        app,
        ["efficiency", *_files_args(small_files), "--out", str(out), "--shots", "2,10"],
        env={"COLUMNS": "300"},
    )
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert "8 class(es) have fewer than 10 training texts" in res.output
    assert "with 6)" in res.output and "at most 6" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (out / "shots-2").exists()
    res = runner.invoke(
        app,
        ["efficiency", "--dataset", "banking77", "--train", str(small_files["train"]), "--out", str(out)],
        env={"COLUMNS": "300"},
    )
    assert res.exit_code == 2 and "either a built-in dataset or files" in res.output
    res = runner.invoke(app, ["efficiency", *_files_args(small_files), "--out", str(out), "--shots", "2,x"])
    assert res.exit_code == 2 and "--shots: expected comma-separated integers" in res.output


def test_the_real_app_lists_every_command():
    """Every command module is imported explicitly (no import guard can silently drop one)."""
    import pkgutil

    import activesynth.agent.cli as cli_package

    expected = {
        "datasets",
        "report",
        "run",
        "efficiency",
        "runs",
        "compare",
        "predict",
        "generate",
        "filter",
        "chat",
        "serve",
        "prompts",
    }
    names = {c.name or c.callback.__name__ for c in app.registered_commands} | {
        g.name for g in app.registered_groups
    }
    assert names == expected
    res = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and all(f" {name} " in res.output for name in expected)
    modules = {m.name for m in pkgutil.iter_modules(cli_package.__path__)}
    assert modules == {
        "app",
        "common",
        "chat",
        "datasets",
        "filters",
        "generate",
        "prompts",
        "report",
        "run",
        "runs",
    }
    prompts = runner.invoke(app, ["prompts", "--help"], env={"COLUMNS": "200"})
    assert all(sub in prompts.output for sub in ("list", "show", "render", "compare"))
