"""Secrets never reach a file, a log or a tracking store: a whole run against a real OpenAI-compatible server
on loopback, with a password and a key in the server URL, a key in the environment, and MLflow tracking on;
then every byte under the run folder and the MLflow store (SQLite included), and everything printed, is
searched for the planted secrets."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from activesynth.agent.cli import app
from tests.agent.llm.conftest import FaultServer

pytestmark = pytest.mark.slow

PASSWORD, QUERY_KEY, ENV_KEY, TOKEN = "pw-7c1f0e", "qk-93ab44", "ek-55d2aa", "tk-0f9e1d"
SECRETS = (PASSWORD, QUERY_KEY, ENV_KEY, TOKEN)


def found_in(folder: Path) -> list[str]:
    """Files under ``folder`` whose bytes contain a planted secret."""
    hits = []
    for p in folder.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            hits += [f"{p.relative_to(folder)}: {s}" for s in SECRETS if s.encode() in data]
    return hits


def test_no_secret_in_any_artifact_log_or_tracking_store(
    tmp_path, small_files, embed_cache, monkeypatch, caplog
):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MY_SERVER_KEY", ENV_KEY)
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "runs" / "secret-run"
    with FaultServer(key=ENV_KEY) as srv:
        port = srv.url.split(":")[2].split("/")[0]
        url = f"http://user:{PASSWORD}@127.0.0.1:{port}/v1?api_key={QUERY_KEY}&x=1"
        files = [a for role in ("train", "dev", "test") for a in (f"--{role}", str(small_files[role]))]
        args = [
            "run",
            *files,
            "--out",
            str(out),
            "--backend",
            "openai",
            "--model",
            "fake-model",
            "--base-url",
            url,
            "--api-key-env",
            "MY_SERVER_KEY",
            "--budget",
            "4",
            "--rounds",
            "1",
            "--mlflow",
            "--set",
            "loop.robustness=false",
        ]
        res = CliRunner().invoke(app, args, env={"ACTIVESYNTH_CACHE": str(embed_cache), "COLUMNS": "300"})
        assert res.exit_code == 0, res.output
        assert srv.posts > 0 and all(
            r["auth"] == f"Bearer {ENV_KEY}" for r in srv.requests
        )  # the key is used
    assert (out / "summary.json").exists() and (tmp_path / "runs" / "mlflow.db").exists()
    assert "--api-key-env" in res.output or "credentials" in caplog.text  # the user is told where a key goes
    assert not found_in(tmp_path / "runs"), found_in(tmp_path / "runs")
    for text in (res.output, caplog.text):
        assert not [s for s in SECRETS if s in text]
    assert "127.0.0.1" in (out / "config.yaml").read_text()  # the URL itself is kept, without credentials


def test_command_line_secrets_are_masked_in_the_run_record():
    from activesynth.agent.config.base import public_command

    argv = [
        "activesynth",
        "serve",
        "--token",
        TOKEN,
        f"--password={PASSWORD}",
        "--api-key-env",
        "MY_KEY",
        f"--base-url=https://u:{PASSWORD}@h/v1?token={QUERY_KEY}",
    ]
    shown = " ".join(public_command(argv))
    assert not [s for s in SECRETS if s in shown]
    assert "MY_KEY" in shown and "https://h/v1" in shown
