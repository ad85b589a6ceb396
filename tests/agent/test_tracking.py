"""Optional MLflow logging of runs: real mlflow on a SQLite store in a temporary folder."""

import json
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from activesynth.agent import tracking
from activesynth.agent.cli import app
from activesynth.agent.config import (
    DataConfig,
    EmbedConfig,
    LoopConfig,
    ReportConfig,
    RunConfig,
    TrackingConfig,
)
from activesynth.agent.llm.cache import CachedBackend, LLMCache
from activesynth.agent.loop import run_loop
from activesynth.agent.runs import Run
from tests.fakes import EchoBackend

SECRET = "sk-never-log-me-4f1e9c07"


def _config(small_files, embed_cache, tracking_cfg=None, **loop):
    return RunConfig(
        data=DataConfig(**small_files, selection_fraction=0.5),
        embed=EmbedConfig(cache_dir=embed_cache),
        report=ReportConfig(n_clusters=3, plots=False),
        loop=LoopConfig(**{"rounds": 2, "budget": 16, "robustness": False, "patience": 5, **loop}),
        tracking=tracking_cfg or TrackingConfig(),
    )


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, small_files, embed_cache):
    """One tracked two-round run, with a secret in the environment that must not reach MLflow."""
    from mlflow.tracking import MlflowClient

    d = tmp_path_factory.mktemp("tracked")
    uri = f"sqlite:///{(d / 'store' / 'mlflow.db').as_posix()}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ACTIVESYNTH_TEST_SECRET", SECRET)
        mp.chdir(d)
        cfg = _config(small_files, embed_cache, TrackingConfig(mlflow=True, tracking_uri=uri, experiment="t"))
        run = Run.create(d / "run", cfg)
        backend = CachedBackend(EchoBackend(), LLMCache(d / "llm.sqlite"))
        summary = run_loop(run, backend=backend)
    return {
        "dir": d,
        "run": run,
        "summary": summary,
        "client": MlflowClient(tracking_uri=uri),
        "backend": backend,
    }


def test_params_round_metrics_and_artifacts_are_logged(tracked):
    run, summary, client = tracked["run"], tracked["summary"], tracked["client"]
    stored = run.record()["mlflow"]
    got = client.get_run(stored["run_id"])
    assert got.info.status == "FINISHED"
    assert client.get_experiment(got.info.experiment_id).name == "t"

    params = got.data.params
    assert params["loop.rounds"] == "2" and params["arm"] == "active" and params["seed"] == "0"
    assert params["data.selection_fraction"] == "0.5" and params["tracking.mlflow"] == "true"
    assert json.loads(params["loop.synthetic_weights"]) == [0.1, 0.3, 0.5, 1.0]
    tags = got.data.tags
    assert tags["activesynth.run_id"] == "run" and tags["activesynth.arm"] == "active"
    assert tags["activesynth.dataset"] == "train.csv" and tags["activesynth.seed"] == "0"
    assert tags["activesynth.stop_reason"] == summary["stop_reason"]
    versions = {k: v for k, v in tags.items() if k.startswith("activesynth.template.")}
    assert versions and all(len(v.split(",")[0]) == 12 for v in versions.values())

    # per round: step = round (0 = the real-only model), the values of summary.json's rows
    rows = {h["round"]: h for h in summary["rounds"]}
    assert {0, 1} <= set(rows)
    hist = client.get_metric_history(stored["run_id"], "test_accuracy")
    assert sorted(m.step for m in hist) == sorted(rows)
    for m in hist:
        assert m.value == pytest.approx(rows[m.step]["test_accuracy"])
    for key in ("test_macro_f1", "test_ece", "selection_macro_f1", "accepted", "tokens", "weight"):
        (m,) = [m for m in client.get_metric_history(stored["run_id"], key) if m.step == 1]
        assert m.value == pytest.approx(float(rows[1][key])), key
    assert client.get_metric_history(stored["run_id"], "seconds_generate")
    assert client.get_metric_history(stored["run_id"], "selection_macro_f1_w0.5")
    dev = json.loads((run.round_dir(1) / "metrics.json").read_text())["dev"]
    (m,) = [m for m in client.get_metric_history(stored["run_id"], "report_dev_macro_f1") if m.step == 0]
    assert m.value == pytest.approx(dev["macro_f1"])  # round 1's report describes the round-0 model
    final = got.data.metrics
    assert final["final_test_accuracy"] == pytest.approx(summary["final"]["test"]["accuracy"])
    assert final["synthetic_used"] == summary["synthetic_used"]
    assert not [k for k in final if "per_class" in k]  # per-class tables stay in the artifacts

    # artifacts: the run folder's key files, stored beside the database (never ./mlruns)
    names = {a.path for a in client.list_artifacts(stored["run_id"])}
    assert {"summary.json", "config.yaml", "run.json", "export", "rounds"} <= names
    assert {a.path for a in client.list_artifacts(stored["run_id"], "export")} == {"export/DATASET_CARD.md"}
    assert "rounds/round-01/metrics.json" in {
        a.path for a in client.list_artifacts(stored["run_id"], "rounds/round-01")
    }
    art = tracked["dir"] / "store" / "mlartifacts"
    assert got.info.artifact_uri.startswith(art.resolve().as_uri())
    assert list(art.rglob("summary.json"))
    assert not (tracked["dir"] / "mlruns").exists()

    # nothing from the environment: the secret appears in no param, tag or artifact
    assert not [v for v in (*params.values(), *tags.values()) if SECRET in v]
    assert not [p for p in art.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]


def test_resume_continues_the_same_mlflow_run(tracked):
    run, client = tracked["run"], tracked["client"]
    first = run.record()["mlflow"]["run_id"]
    again = run_loop(Run.open(run.path), backend=tracked["backend"])
    assert run.record()["mlflow"]["run_id"] == first
    exp = client.get_run(first).info.experiment_id
    runs = client.search_runs([exp])
    assert [r.info.run_id for r in runs] == [first]
    assert runs[0].info.status == "FINISHED"
    assert runs[0].data.metrics["final_test_accuracy"] == pytest.approx(again["final"]["test"]["accuracy"])
    steps = [m.step for m in client.get_metric_history(first, "test_accuracy")]
    assert sorted(steps) == sorted({h["round"] for h in again["rounds"]})  # replayed values: not logged twice


def test_disabled_tracking_creates_nothing(tmp_path, small_files, embed_cache, monkeypatch):
    def boom():
        raise AssertionError("mlflow must not be imported when tracking is off")

    monkeypatch.setattr(tracking, "_import_client", boom)
    monkeypatch.chdir(tmp_path)
    run = Run.create(
        tmp_path / "run", _config(small_files, embed_cache, rounds=1).model_copy(update={"arm": "real-only"})
    )
    run_loop(run)
    assert "mlflow" not in run.record()
    assert not list(tmp_path.rglob("mlflow.db")) and not list(tmp_path.rglob("mlruns"))
    assert not list(tmp_path.rglob("mlartifacts"))


def _hide_mlflow(monkeypatch):
    for name in ("mlflow", "mlflow.tracking", "mlflow.entities"):
        monkeypatch.setitem(sys.modules, name, None)  # `import mlflow` now raises ImportError


def test_missing_mlflow_is_one_clear_line(tmp_path, small_files, embed_cache, monkeypatch):
    _hide_mlflow(monkeypatch)
    cfg = _config(small_files, embed_cache, TrackingConfig(mlflow=True), rounds=1)
    run = Run.create(tmp_path / "run", cfg)
    with pytest.raises(tracking.TrackingError) as e:
        run_loop(run)
    msg = str(e.value)
    assert "\n" not in msg and "pip install 'active-synthesis[mlflow]'" in msg
    assert not list(tmp_path.rglob("mlflow.db")) and not run.rounds()  # failed before any work

    out = tmp_path / "cli"
    files = [a for role in ("train", "dev", "test") for a in (f"--{role}", str(small_files[role]))]
    res = CliRunner().invoke(app, ["run", *files, "--mlflow", "--out", str(out)], env={"COLUMNS": "300"})
    assert res.exit_code == 2, res.output
    assert "pip install 'active-synthesis[mlflow]'" in res.output and "Traceback" not in res.output
    assert not out.exists()  # refused before the run folder is made


def test_cli_flags_set_the_tracking_config(tmp_path, small_files, monkeypatch):
    import activesynth.agent.loop as loop

    seen = {}

    def fake_run_loop(run, progress=None, backend=None):
        seen["config"] = run.config
        raise ValueError("stop here")

    monkeypatch.setattr(loop, "run_loop", fake_run_loop)
    monkeypatch.setattr(tracking, "require_mlflow", lambda: None)
    files = [a for role in ("train", "dev", "test") for a in (f"--{role}", str(small_files[role]))]
    res = CliRunner().invoke(
        app,
        ["run", *files, "--mlflow-uri", "sqlite:///x/m.db", "--out", str(tmp_path / "r")],
        env={"COLUMNS": "300"},
    )
    assert res.exit_code == 2 and "stop here" in res.output, res.output
    assert seen["config"].tracking == TrackingConfig(mlflow=True, tracking_uri="sqlite:///x/m.db")
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert saved["tracking"] == {
        "mlflow": True,
        "tracking_uri": "sqlite:///x/m.db",
        "experiment": "active-synthesis",
    }


def test_config_is_strict_documented_and_old_configs_load(tmp_path, small_files):
    assert TrackingConfig.model_config.get("extra") == "forbid"
    assert all(f.description for f in TrackingConfig.model_fields.values())
    assert RunConfig.model_fields["tracking"].description
    with pytest.raises(ValidationError):
        TrackingConfig.model_validate({"mlflow": True, "uri": "sqlite:///x.db"})
    with pytest.raises(ValidationError):
        TrackingConfig(experiment="")
    old = RunConfig(data=DataConfig(**small_files)).model_dump(mode="json")
    del old["tracking"]  # a config.yaml written before the option existed
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(old))
    from activesynth.agent.config import load_config

    assert load_config(p).tracking == TrackingConfig()


def test_default_uri_and_secret_redaction(tmp_path):
    assert (
        tracking.default_uri(tmp_path / "runs" / "b77")
        == f"sqlite:///{(tmp_path / 'runs').resolve()}/mlflow.db"
    )
    arm = tmp_path / "runs" / "cmp" / "seed-1" / "active"
    assert tracking.default_uri(arm) == f"sqlite:///{(tmp_path / 'runs' / 'cmp').resolve()}/mlflow.db"

    cfg = RunConfig.model_validate(
        {
            "data": {"dataset": "banking77"},
            "generate": {
                "backend": {
                    "kind": "openai",
                    "model": "m",
                    "base_url": "https://me:hunter2@llm.example/v1?api_key=abc123&x=1",
                    "extra_body": {"api_key": "xyz789", "top_k": 5},
                }
            },
            "tracking": {"mlflow": True, "tracking_uri": "https://u:pw999@mlflow.example"},
        }
    )
    params = tracking.config_params(cfg)
    text = json.dumps(params)
    for secret in ("hunter2", "abc123", "xyz789", "pw999"):
        assert secret not in text
    # the config itself drops URL credentials on validation; the tracker would mask any that came through
    assert params["generate.backend.base_url"] == "https://llm.example/v1?x=1"
    assert tracking.redact("https://me:hunter2@h/v1?api_key=abc123") == "https://me:***@h/v1?api_key=***"
    assert params["generate.backend.extra_body.top_k"] == "5"
    assert params["generate.backend.api_key_env"] == "OPENAI_API_KEY"  # a variable's name, not a secret
    assert params["generate.sampling.max_tokens"] == "48"  # 'tokens' is no secret
    assert tracking.redact("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"
    assert Path(tracking.default_uri(tmp_path / "r")[len("sqlite:///") :]).name == "mlflow.db"


def test_a_store_failure_after_the_start_never_stops_the_run(tmp_path, caplog):
    """finish() goes on past a failing step: artifacts are still logged and the run is closed."""
    calls = []

    class FlakyClient:
        def log_batch(self, run_id, metrics=(), params=(), tags=()):
            raise RuntimeError("database is locked")

        def log_artifact(self, run_id, path, folder=None):
            calls.append(("artifact", Path(path).name, folder))

        def set_terminated(self, run_id, status):
            calls.append(("status", status))

    run = Run.create(tmp_path / "r", RunConfig(data=DataConfig(dataset="banking77")))
    (run.path / "summary.json").write_text("{}")
    t = tracking.Tracker(FlakyClient(), "rid", (None, lambda *a: a, None, lambda *a: a))
    t.log_round({"round": 1, "test_accuracy": 0.5})
    t.finish(run, {"rounds": [{"round": 0}], "final": {"test": {"accuracy": 0.5}}, "stop_reason": "x"})
    assert ("artifact", "summary.json", None) in calls and ("status", "FINISHED") in calls
    assert "database is locked" in caplog.text
