import json
import subprocess
import sys

from typer.testing import CliRunner

from agent.cli import app

runner = CliRunner()


def test_help_is_fast_and_lists_commands():
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import agent.cli"],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines()}
    assert "agent.cli" in loaded  # the check reads the import log at all
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
