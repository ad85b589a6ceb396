"""Bad input through the real CLI: one clear line, exit code 2, nothing half-made left behind, and the
corrected retry into the same folder works. Config files get the same defaults as flags."""

from __future__ import annotations

import bz2
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from activesynth.agent.cli import app

pytestmark = pytest.mark.slow


def cli(*args, cache: Path):
    res = CliRunner().invoke(
        app, [str(a) for a in args], env={"ACTIVESYNTH_CACHE": str(cache), "COLUMNS": "300"}
    )
    return res


def one_line_error(res) -> str:
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in res.output, res.output
    return lines[0]


@pytest.fixture
def labelled(tmp_path, small_files) -> Path:
    """One labelled CSV (train + dev + test of the small slice) for ``--data``."""
    out = tmp_path / "all.csv"
    lines = []
    for role in ("train", "dev", "test"):
        rows = small_files[role].read_text(encoding="utf-8").splitlines()
        lines += rows if not lines else rows[1:]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


@pytest.mark.parametrize(
    "name, content, says",
    [
        ("corrupt.csv.bz2", b"BZh91AY&SY" + b"\x00" * 40, "bz2"),
        ("tiny.csv", b"text,label\nhello there,a\nhi again,b\nyo yo,a\n", "too few to split"),
        ("esc.csv", b"\x1b[2Jtext,label\nhello there,a\n", "missing column"),
        ("quote.csv", b'text,label\n"unterminated,a\nnext,b\n', "unterminated quoted field"),
        ("nul.csv", b"text,label\nhel\x00lo,a\n", "NUL"),
        ("dup.csv", b"text,text,label\na,b,c\n", "appears 2 times"),
    ],
)
def test_bad_data_leaves_no_run_folder(tmp_path, embed_cache, labelled, name, content, says):
    bad = tmp_path / name
    bad.write_bytes(content)
    out = tmp_path / "out"
    for command in ("run", "report"):
        line = one_line_error(cli(command, "--data", bad, "--out", out, cache=embed_cache))
        assert says in line and "\x1b" not in line
        assert not out.exists(), f"{command} left {sorted(p.name for p in out.iterdir())}"
    res = cli(
        "report", "--data", labelled, "--out", out, "--shots", "3", cache=embed_cache
    )  # the fixed retry
    assert res.exit_code == 0, res.output


def test_a_stub_from_an_older_failure_does_not_block_the_retry(tmp_path, embed_cache, labelled, small_files):
    from activesynth.agent.config import DataConfig, RunConfig
    from activesynth.agent.runs import Run

    out = tmp_path / "out"
    Run.create(out, RunConfig(data=DataConfig(**small_files)))  # created, never started
    res = cli("report", "--data", labelled, "--out", out, "--shots", "3", cache=embed_cache)
    assert res.exit_code == 0, res.output
    assert Run.open(out).config.data.data == labelled


@pytest.mark.parametrize(
    "yaml_text, says",
    [
        ("data: {dataset: banking77}\nloop: {bogus_key: 1}\n", "loop.bogus_key: unknown setting"),
        ("- data\n- loop\n", "expected a mapping of sections"),
        ("data: {dataset: banking77}\nloop: {budget: -3}\n", "loop.budget"),
        ("data: [unclosed\n", "not valid YAML"),
        ("", "empty config"),
    ],
)
def test_bad_config_files_name_the_setting(tmp_path, embed_cache, yaml_text, says):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    line = one_line_error(cli("run", "--config", cfg, "--out", tmp_path / "o", cache=embed_cache))
    assert says in line
    assert not (tmp_path / "o").exists()


def test_unknown_set_key_and_bad_values_name_the_setting(tmp_path, embed_cache, small_files):
    files = [a for role in ("train", "dev", "test") for a in (f"--{role}", small_files[role])]
    line = one_line_error(
        cli("run", *files, "--set", "filter.rouge_l.bogus=1", "--out", tmp_path / "o", cache=embed_cache)
    )
    assert "filter.rouge_l.bogus: unknown setting" in line
    line = one_line_error(
        cli("run", *files, "--selection-fraction", "1.5", "--out", tmp_path / "o", cache=embed_cache)
    )
    assert "data.selection_fraction" in line
    line = one_line_error(cli("run", *files, "--set", "nonsense", "--out", tmp_path / "o", cache=embed_cache))
    assert "KEY=VALUE" in line
    assert not (tmp_path / "o").exists()


def test_config_file_runs_get_the_selection_split(tmp_path, embed_cache, small_files):
    """One default for every entry point: a config-file run chooses weights on the selection split too."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"data: {{train: {small_files['train']}, dev: {small_files['dev']}, test: {small_files['test']}}}\n"
        "arm: real-only\nloop: {rounds: 1, robustness: false}\nreport: {plots: false}\n"
    )
    res = cli("run", "--config", cfg, "--out", tmp_path / "o", cache=embed_cache)
    assert res.exit_code == 0, res.output
    from activesynth.agent.runs import Run

    assert Run.open(tmp_path / "o").config.data.selection_fraction == 0.5
    shutil.rmtree(tmp_path / "o")


def test_compressed_data_that_is_fine_still_loads(tmp_path, embed_cache, labelled):
    good = tmp_path / "all.csv.bz2"
    good.write_bytes(bz2.compress(labelled.read_bytes()))
    res = cli("report", "--data", good, "--out", tmp_path / "o", "--shots", "3", cache=embed_cache)
    assert res.exit_code == 0, res.output
