"""While one process holds a run (``run --resume``, a chat worker), no other command writes into it: every
writing command takes the run's lock before its first write and stops with one line. Control messages
(stop, pause, approvals, next-round changes, a new prompt version) are the designed way to reach a busy
run: they go to the state store, never to an artifact the worker writes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from activesynth.agent.cli import app

pytestmark = pytest.mark.slow


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` but the lock and the state store (control messages)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name not in (".lock",) and not p.name.startswith("state.sqlite"):
            out[p.relative_to(folder).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def reported(tmp_path_factory, small_files, embed_cache) -> Path:
    """A run with round 1's report and model, and candidates to filter."""
    from activesynth.agent.config import DataConfig, EmbedConfig, ReportConfig, RunConfig
    from activesynth.agent.loop import report_round
    from activesynth.agent.runs import Run

    cfg = RunConfig(
        data=DataConfig(**small_files),
        embed=EmbedConfig(cache_dir=embed_cache),
        report=ReportConfig(n_clusters=3, plots=False),
    )
    run = Run.create(tmp_path_factory.mktemp("locks") / "run", cfg)
    with run.lock():
        report_round(run, 1)
    rows = [
        {"id": f"c{i}", "round": 1, "text": text, "label": "card_arrival", "status": "parsed"}
        for i, text in enumerate(["Where is the card I ordered?", "My new card has not come yet."])
    ]
    (run.round_dir(1) / "candidates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run.path


COMMANDS = {
    "generate": ["generate", "--run", "{run}", "--texts", "4"],
    "generate --dry-run": ["generate", "--run", "{run}", "--dry-run", "--replan"],
    "filter": ["filter", "--run", "{run}", "--no-metrics"],
    "prompts render": ["prompts", "render", "self_instruct_list", "--run", "{run}"],
    "prompts compare": ["prompts", "compare", "self_instruct_list", "evol_in_depth_list", "--run", "{run}"],
    "run --resume": ["run", "--resume", "{run}"],
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_writing_commands_refuse_a_held_run(name, reported, embed_cache, monkeypatch):
    from activesynth.agent.runs import Run

    monkeypatch.setenv("ACTIVESYNTH_CACHE", str(embed_cache))
    args = [a.format(run=reported) for a in COMMANDS[name]]
    plan = reported / "round-01" / "generation_plan.json"
    plan.unlink(missing_ok=True)  # so that commands which plan would have to write one
    before = snapshot(reported)
    with Run.open(reported).lock():  # another process works on the run (flock: per open file)
        res = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert res.exit_code == 2, res.output
    assert "another process is working on this run" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert snapshot(reported) == before, "a refused command wrote into the run"


def test_the_same_command_works_once_the_run_is_free(reported, embed_cache, monkeypatch):
    monkeypatch.setenv("ACTIVESYNTH_CACHE", str(embed_cache))
    res = CliRunner().invoke(app, ["filter", "--run", str(reported), "--no-metrics"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert (reported / "round-01" / "decisions.jsonl").exists()


def test_chat_tools_on_a_busy_run(reported, tmp_path):
    """Control tools reach a held run through the state store and touch no artifact; creating a run in a
    folder another process holds is refused with one line."""
    import shutil

    from activesynth.agent.chat.session import ChatSession
    from activesynth.agent.runs import Run

    root = tmp_path / "store"
    shutil.copytree(reported, root / "busy")
    session = ChatSession(root, model=None)
    before = snapshot(root / "busy")
    with Run.open(root / "busy").lock():
        commands = ("/pause busy", "/resume busy", "/set loop.budget=5 --run busy", "/approve 1 --run busy")
        for command in (*commands, "/stop busy"):
            reply = session.handle(command)
            assert not reply.startswith("error"), (command, reply)
        reply = session.box.call("start_run", {"dataset": "banking77", "run_id": "busy"})
        assert reply.startswith("error:") and len(reply.splitlines()) == 1
    assert snapshot(root / "busy") == before
    run = Run.open(root / "busy")
    assert run.get_state("control.overrides") == {"loop.budget": 5}
    assert run.get_state("control.stop")["reason"]


def test_run_create_takes_the_lock(tmp_path, small_files):
    from activesynth.agent.config import DataConfig, RunConfig
    from activesynth.agent.runs import Run, RunLocked

    path = tmp_path / "r"
    path.mkdir()
    holder = Run(path, None)
    with holder.lock(), pytest.raises(RunLocked):
        Run.create(path, RunConfig(data=DataConfig(**small_files)))
    assert not (path / "config.yaml").exists() and not (path / "run.json").exists()
