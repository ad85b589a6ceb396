"""Optional MLflow logging of a run (``tracking.mlflow: true``; ``pip install 'active-synthesis[mlflow]'``).

One run folder = one MLflow run. At start: tags (run id, dataset, arm, seed, template versions) and the
config as flat params; per round (``step`` = round, 0 = the real-only model): the numbers of the round's
summary row (``round-NN/metrics.json["entry"]``) and the dev metrics of its uncertainty report; at the end:
the summary's final metrics and the run folder's key files as artifacts. The MLflow run id is kept in
``run.json["mlflow"]``, so a resumed run goes on logging into the same MLflow run.

mlflow is imported only here and only when tracking is on: ``import agent.loop`` stays light. Nothing is read
from the environment; URLs are logged without their passwords and secret-looking keys are masked.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from activesynth.agent.runs import Comparison, Round, Run, RunError

__all__ = ["EXTRA_HINT", "Tracker", "TrackingError", "config_params", "default_uri", "start_tracking"]

log = logging.getLogger(__name__)
EXTRA_HINT = "pip install 'active-synthesis[mlflow]'"
_PARAM_MAX = 500  # characters of one param value (the full config is logged as config.yaml)
_BATCH = 100  # params/tags per log_batch call (MLflow's limit)
_ARTIFACTS = (Run.SUMMARY, Run.CONFIG, Run.RECORD, Run.USAGE, f"{Run.EXPORT}/DATASET_CARD.md")
_COMPARISON = (Comparison.RESULT, Comparison.TABLE, Comparison.PLOT)


class TrackingError(RunError):
    """Tracking is on but cannot start (mlflow missing, unusable tracking URI or experiment)."""


# ----------------------------------------------------------------------------------------------------------
# Helpers without mlflow


_USERINFO = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):[^@/\s]*@")
_SECRET_QUERY = re.compile(
    r"(?P<head>[?&](?:api[_-]?key|key|token|access_token|secret|password|sig|signature)=)[^&#\s]*", re.I
)
_SECRET_KEY = re.compile(
    r"(?:^|[_.-])(?:api[_-]?key|apikey|secret|password|passwd|token|authorization|credentials?)$", re.I
)


def redact(text: str) -> str:
    """``text`` with URL passwords and secret query values replaced by ``***``."""
    text = _USERINFO.sub(r"\g<head>:***@", text)
    return _SECRET_QUERY.sub(r"\g<head>***", text)


def default_uri(run_path: Path) -> str:
    """``sqlite:///<folder holding the run>/mlflow.db``; for a ``--compare`` arm (``<out>/seed-S/<arm>``)
    the comparison folder ``<out>``, so all arms and seeds of a comparison share one store."""
    parent = Path(run_path).resolve().parent
    if re.fullmatch(r"seed-\d+", parent.name):
        parent = parent.parent
    return f"sqlite:///{(parent / 'mlflow.db').as_posix()}"


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: data}


def config_params(config) -> dict[str, str]:
    """The run config as flat ``section.key`` → string params (secret-looking keys masked, URLs redacted)."""
    out = {}
    for key, value in _flatten(config.model_dump(mode="json")).items():
        if _SECRET_KEY.search(key) and value not in (None, "", {}, []):
            text = "***"
        else:
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            text = redact(text)
        out[key] = text if len(text) <= _PARAM_MAX else text[: _PARAM_MAX - 1] + "…"
    return out


_BAD_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


def _numbers(data: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of ``data`` as flat ``a_b`` names (bools as 0/1; None, text and per-class tables
    skipped: per-class numbers stay in the artifacts)."""
    out: dict[str, float] = {}
    for k, v in data.items():
        name = _BAD_KEY.sub("_", f"{prefix}_{k}" if prefix else str(k))
        if k == "per_class":
            continue
        if isinstance(v, dict):
            out.update(_numbers(v, name))
        elif isinstance(v, bool | int | float):
            out[name] = float(v)
    return out


def _round_metrics(entry: dict) -> dict[str, float]:
    row = {k: v for k, v in entry.items() if k not in ("round", "stage", "weights_tried")}
    out = _numbers(row)
    for w, f1 in (entry.get("weights_tried") or {}).items():
        out[f"selection_macro_f1_w{w}"] = float(f1)
    return out


def _final_metrics(summary: dict) -> dict[str, float]:
    final = summary.get("final") or {}
    out = {f"final_test_{k}": v for k, v in _numbers(final.get("test") or {}).items()}
    out.update({f"final_selection_{k}": v for k, v in _numbers(final.get("selection") or {}).items()})
    if "dev_test_gap" in final:
        out["final_dev_test_gap"] = float(final["dev_test_gap"])
    rob = final.get("robustness") or {}
    for kind in ("typos", "casing", "drop_words"):
        if isinstance(rob.get(kind), dict) and "accuracy" in rob[kind]:
            out[f"final_robust_{kind}_accuracy"] = float(rob[kind]["accuracy"])
    if isinstance(rob.get("attack"), dict) and "success_rate" in rob["attack"]:
        out["final_attack_success_rate"] = float(rob["attack"]["success_rate"])
    for k in ("synthetic_used", "weight", "tokens", "seconds"):
        if isinstance(summary.get(k), int | float):
            out[k] = float(summary[k])
    return out


def _template_tags(run: Run) -> dict[str, str]:
    """``activesynth.template.<name>`` → comma-joined versions (sha12) used so far (from run.json)."""
    by_name: dict[str, set[str]] = {}
    for ref, t in (run.record().get("templates") or {}).items():
        name = t.get("name") or ref.split("@")[0]
        by_name.setdefault(name, set()).add(str(t.get("version") or ref.split("@")[-1])[:12])
    return {f"activesynth.template.{n}": ",".join(sorted(v)) for n, v in sorted(by_name.items())}


def _run_name(path: Path) -> str:
    path = Path(path).resolve()
    if re.fullmatch(r"seed-\d+", path.parent.name):
        return f"{path.parent.parent.name}/{path.parent.name}/{path.name}"
    return path.name


def _dataset_name(config) -> str:
    d = config.data
    if d.dataset:
        return d.dataset
    f = d.data or d.train
    return Path(f).name if f else "user data"


def _import_client():
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient
    except ImportError as e:
        raise TrackingError(
            f"MLflow tracking is on (tracking.mlflow) but mlflow cannot be imported ({e}); "
            f"install it with: {EXTRA_HINT}"
        ) from None
    return MlflowClient, Metric, Param, RunTag


def require_mlflow() -> None:
    """Raise :class:`TrackingError` (one line naming the extra) unless mlflow imports."""
    _import_client()


# ----------------------------------------------------------------------------------------------------------
# The tracker


class Tracker:
    """Logs into one MLflow run; every method is a no-op when tracking is off. Logging failures after the
    start are warnings: a run is never lost because its tracking store hiccupped."""

    def __init__(self, client=None, run_id: str | None = None, entities=None) -> None:
        self.client = client
        self.run_id = run_id
        self._entities = entities
        self._logged: dict[tuple[str, int], float] = {}  # (key, step) -> value already in the store

    @property
    def enabled(self) -> bool:
        return self.client is not None

    def _log_metrics(self, values: dict[str, float], step: int) -> None:
        _, Metric, _, _ = self._entities
        now = int(time.time() * 1000)
        # a value already logged at this step (e.g. replayed by a resumed run) is not logged twice
        fresh = {k: v for k, v in values.items() if self._logged.get((k, step)) != v}
        metrics = [Metric(k, v, now, step) for k, v in sorted(fresh.items())]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])
        self._logged.update({(k, step): v for k, v in fresh.items()})

    def _load_logged(self, keys) -> None:
        for key in keys:
            for m in self.client.get_metric_history(self.run_id, key):
                self._logged[(key, int(m.step))] = float(m.value)

    def _set_tags(self, tags: dict[str, str]) -> None:
        _, _, _, RunTag = self._entities
        items = [RunTag(k, redact(str(v))) for k, v in tags.items()]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, tags=items[i : i + _BATCH])

    def log_round(self, entry: dict, rnd: Round | None = None) -> None:
        """Log one summary row at ``step = entry["round"]``; with the round ``rnd``, also the dev metrics of
        that round's uncertainty report (``report_dev_*``) at the step of the model that wrote it
        (round − 1)."""
        if not self.enabled:
            return
        try:
            self._log_metrics(_round_metrics(entry), int(entry["round"]))
            if rnd is not None and rnd.has(Round.METRICS):
                dev = rnd.read_json(Round.METRICS).get("dev") or {}
                self._log_metrics({f"report_dev_{k}": v for k, v in _numbers(dev).items()}, rnd.n - 1)
        except Exception as e:  # noqa: BLE001 - tracking must never stop the loop
            log.warning("MLflow: could not log round %s: %s", entry.get("round"), str(e).splitlines()[0])

    def finish(self, run: Run, summary: dict) -> None:
        """Final metrics, the stop reason, template versions, key files as artifacts; mark FINISHED."""
        if not self.enabled:
            return
        last = max((int(h["round"]) for h in summary.get("rounds") or []), default=0)
        # each step on its own: one failure does not lose the rest
        self._try("final metrics", self._log_metrics, _final_metrics(summary), last)
        tags = {"activesynth.stop_reason": summary.get("stop_reason", ""), **_template_tags(run)}
        self._try("tags", self._set_tags, tags)
        files = [(run.path / name, Path(name).parent.as_posix()) for name in (*_ARTIFACTS, *_COMPARISON)]
        files += [
            (run.round(n).file(Round.METRICS), f"rounds/{run.round(n).path.name}") for n in run.rounds()
        ]
        for path, folder in files:
            if path.is_file():
                folder = None if folder == "." else folder
                self._try(f"artifact {path.name}", self.client.log_artifact, self.run_id, str(path), folder)
        self._try("run status", self.client.set_terminated, self.run_id, "FINISHED")

    @staticmethod
    def _try(what: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - tracking must never stop the loop
            log.warning("MLflow: could not log the %s: %s", what, (str(e).splitlines() or [""])[0])


def start_tracking(run: Run) -> Tracker:
    """Start (or, when ``run.json`` names one in the same store, resume) the MLflow run of ``run``.

    Off (the default): returns a no-op :class:`Tracker`, imports nothing and creates nothing. On: any problem
    before work starts is a :class:`TrackingError` with a one-line message."""
    cfg = run.config.tracking
    if not cfg.mlflow:
        return Tracker()
    MlflowClient, Metric, Param, RunTag = _import_client()
    uri = cfg.tracking_uri or default_uri(run.path)
    shown = redact(uri)
    try:
        if uri.startswith("sqlite:///"):
            Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        client = MlflowClient(tracking_uri=uri)
        run_id = _resume_or_create(client, run, cfg.experiment, uri, shown)
        tracker = Tracker(client, run_id, (MlflowClient, Metric, Param, RunTag))
        found = client.get_run(run_id).data
        tracker._load_logged(found.metrics)  # resumed: what is already there is not logged again
        existing = found.params
        params = []
        for k, v in config_params(run.config).items():
            if k not in existing:
                params.append(Param(k, v))
            elif existing[k] != v:
                log.warning("MLflow: param %s changed (%r -> %r); keeping the first value", k, existing[k], v)
        for i in range(0, len(params), _BATCH):
            client.log_batch(run_id, params=params[i : i + _BATCH])
        rec = run.record()
        tracker._set_tags(
            {
                "activesynth.run_id": rec.get("id", run.path.name),
                "activesynth.run_path": str(run.path.resolve()),
                "activesynth.dataset": _dataset_name(run.config),
                "activesynth.arm": run.config.arm,
                "activesynth.seed": str(run.config.seed),
                **_template_tags(run),
            }
        )
    except TrackingError:
        raise
    except Exception as e:  # noqa: BLE001 - one line for any store problem
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise TrackingError(f"MLflow tracking at {shown}: {first}") from None
    return tracker


def _resume_or_create(client, run: Run, experiment: str, uri: str, shown: str) -> str:
    stored = run.record().get("mlflow") or {}
    if stored.get("run_id") and stored.get("tracking_uri") == shown:
        try:
            found = client.get_run(stored["run_id"])
        except Exception:  # noqa: BLE001 - gone from the store: start a new MLflow run
            found = None
        if found is not None and found.info.lifecycle_stage == "active":
            client.update_run(found.info.run_id, status="RUNNING")
            return found.info.run_id
        log.warning("MLflow run %s is gone from %s; starting a new one", stored["run_id"], shown)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        location = None
        if uri.startswith("sqlite:///"):  # artifacts beside the database, not in ./mlruns
            location = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").resolve().as_uri()
        try:
            exp_id = client.create_experiment(experiment, artifact_location=location)
        except Exception:  # another process may have just created it
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                raise
            exp_id = exp.experiment_id
    elif exp.lifecycle_stage != "active":
        raise TrackingError(
            f"MLflow experiment {experiment!r} at {shown} is deleted; restore it or set tracking.experiment"
        )
    else:
        exp_id = exp.experiment_id
    created = client.create_run(exp_id, run_name=_run_name(run.path))
    run.update_record(mlflow={"run_id": created.info.run_id, "experiment_id": exp_id, "tracking_uri": shown})
    return created.info.run_id
