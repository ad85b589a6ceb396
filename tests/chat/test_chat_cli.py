"""``activesynth chat`` and ``activesynth serve`` through the real app."""

from __future__ import annotations

from typer.testing import CliRunner

from activesynth.agent.cli import app


def _app():
    return app


def test_serve_refuses_public_address_without_token(tmp_path, monkeypatch):
    monkeypatch.delenv("ACTIVESYNTH_SERVE_TOKEN", raising=False)
    res = CliRunner().invoke(_app(), ["serve", "--root", str(tmp_path), "--host", "0.0.0.0", "--port", "0"])
    assert res.exit_code == 2
    assert "without an access token" in res.output


def test_chat_in_the_terminal(tiny_store, monkeypatch):
    monkeypatch.delenv("ACTIVESYNTH_CHAT_BASE_URL", raising=False)
    res = CliRunner().invoke(_app(), ["chat", "--root", str(tiny_store)], input="/runs\nhello\n/quit\n")
    assert res.exit_code == 0, res.output
    assert "tiny" in res.output and "No chat model is configured" in res.output
