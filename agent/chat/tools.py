"""The fixed set of chat tools. Each has a strict pydantic argument model and returns text. These are the
only actions a chat model can take: no shell, no files outside the run store.

Texts that come from datasets or generators are shown as JSON string literals; for a model they are also
wrapped in ``<data>…</data>`` (with ``<`` escaped inside), and the system prompt says such content is data.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from activesynth.agent import control
from activesynth.agent.chat.store import RunStore, StoreError, redact
from activesynth.agent.config import ConfigError
from activesynth.agent.runs import Run, RunError

__all__ = ["TOOLS", "Tool", "ToolBox"]

_MAX_OUT = 6000


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class NoArgs(Args):
    pass


class RunArg(Args):
    run_id: str | None = Field(None, description="Run id (folder under the run store); default: current run.")


class StartRunArgs(Args):
    dataset: str | None = Field(None, description="Built-in dataset, e.g. banking77 (or give config).")
    config: str | None = Field(None, description="A YAML run config file inside the run store root.")
    shots: int | None = Field(None, ge=1, description="Real training texts per class.")
    budget: int | None = Field(None, ge=0, description="Accepted synthetic texts for the run.")
    rounds: int | None = Field(None, ge=1, description="Most rounds.")
    arm: Literal["active", "untargeted", "real-only"] = Field("active", description="What the run does.")
    seed: int = Field(0, description="Seed.")
    run_id: str | None = Field(None, description="Folder name for the new run; default: generated.")


class ReportArgs(RunArg):
    round: int | None = Field(None, ge=1, description="Round (default: latest).")


class ClusterArgs(ReportArgs):
    cluster_id: int = Field(ge=0, description="Cluster id from the uncertainty report.")


class SamplesArgs(ReportArgs):
    kind: Literal["all", "accepted", "rejected"] = Field("rejected", description="Which samples.")
    label: str | None = Field(None, description="Only this intended label.")
    limit: int = Field(10, ge=1, le=100, description="Most samples shown.")


class EditPromptArgs(RunArg):
    name: str = Field(description="Template name or name@sha12, e.g. self_instruct_list.")
    source: str = Field(description="The full new template text, header included.")


class SetConfigArgs(RunArg):
    changes: dict[str, int | float | str | bool | list[str] | None] = Field(
        description="Dotted config keys and values for the next round, e.g. {'loop.budget': 50, "
        "'filter.rouge_l.max_f': 0.8}; validated against the strict run config. Only the loop, filter, "
        "planner, sampling, uncertainty and report sections can change from chat."
    )


# What a chat (or web) user may change in a run: the settings of rounds, filters, planning and sampling.
# Not data files, caches, models, servers or tracking stores: those name paths and addresses, which a chat
# model must not be able to point at (reading or writing files outside the run store, calling other hosts).
CHAT_SETTABLE = (
    "loop.",
    "filter.",
    "generate.planner.",
    "generate.sampling.",
    "generate.chat_max_tokens",
    "generate.keep_surplus",
    "uncertainty.",
    "report.",
)
# Inside the settable sections, settings that name a model, a server or a file (the label checks' own
# backends and models) stay out of a chat's reach too, and so does switching off the test-leakage guard;
# templates only by name.
CHAT_FORBIDDEN = ("filter.llm_judge.backend", "filter.likelihood.model", "filter.leakage_guard")
CHAT_TEMPLATES = ("generate.planner.templates", "filter.llm_judge.template", "filter.likelihood.template")
_TEMPLATE_REF = re.compile(r"[A-Za-z0-9_-]+(@[0-9a-f]{6,64})?")


def _leaves(key: str, value: Any):
    """(dotted key, value) of every setting a change touches: a mapping value sets each of its keys."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _leaves(f"{key}.{k}", v)
    else:
        yield key, value


def check_chat_changes(changes: dict[str, Any]) -> None:
    """Refuse (StoreError, one line) a change a chat may not make: a key outside :data:`CHAT_SETTABLE` or
    in :data:`CHAT_FORBIDDEN` (also inside a mapping set as a whole), or a template given as a path instead
    of ``name`` / ``name@sha12``."""
    allowed = ", ".join(k.rstrip(".") for k in CHAT_SETTABLE)
    for top, whole in changes.items():
        for key, value in _leaves(top, whole):
            if not key.startswith(CHAT_SETTABLE):
                raise StoreError(f"{key}: cannot be changed from chat (allowed: {allowed})")
            if key.startswith(CHAT_FORBIDDEN):
                raise StoreError(f"{key}: cannot be changed from chat; set it in the run's config")
            if (
                key.startswith(CHAT_TEMPLATES)
                and value is not None
                and not (isinstance(value, str) and _TEMPLATE_REF.fullmatch(value))
            ):
                raise StoreError(f"{key}: give a template name or name@sha12, not {value!r}")


class ApproveArgs(RunArg):
    round: int | None = Field(
        None, ge=1, description="Round whose accepted batch is decided (default latest)."
    )
    approved: bool = Field(True, description="True to approve, False to reject the batch.")
    note: str = Field("", max_length=500, description="Why.")


class CompareArgs(Args):
    run_a: str = Field(description="First run id.")
    run_b: str = Field(description="Second run id.")


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args: type[Args]
    func: Callable[..., str]


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


class ToolBox:
    """Tools bound to one run store and one run manager. ``fenced`` wraps data texts for a model."""

    def __init__(self, store: RunStore, manager=None, fenced: bool = False) -> None:
        from activesynth.agent.chat.manager import RunManager

        self.store = store
        self.manager = manager or RunManager()
        self.fenced = fenced
        self.current: str | None = None
        self.tools = {t.name: t for t in self._tools()}

    # -- plumbing ------------------------------------------------------------------------------------
    def call(self, name: str, args: dict | None = None) -> str:
        """Validate ``args`` against the tool's model and run it; errors come back as one line of text."""
        tool = self.tools.get(name)
        if tool is None:
            return f"error: no tool {name!r}"
        try:
            parsed = tool.args.model_validate(args or {})
            out = tool.func(parsed)
        except ValidationError as e:
            err = e.errors()[0]
            out = f"error: {'.'.join(map(str, err['loc'])) or name}: {err['msg']}"
        except (StoreError, RunError, ValueError, OSError) as e:
            out = f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        out = redact(out)
        return out if len(out) <= _MAX_OUT else out[:_MAX_OUT] + "\n… (truncated)"

    def q(self, text: str | None) -> str:
        """A data text as a JSON literal; fenced as ``<data>…</data>`` for a model."""
        lit = json.dumps(text or "", ensure_ascii=False)
        if not self.fenced:
            return lit
        return "<data>" + lit.replace("<", "\\u003c").replace(">", "\\u003e") + "</data>"

    def _run_id(self, run_id: str | None) -> str:
        rid = run_id or self.current
        if rid is None:
            runs = [r for r in self.store.list_runs() if r["kind"] == "run"]
            if not runs:
                raise StoreError("no runs yet: start one with /start")
            rid = max(runs, key=lambda r: (self.store.resolve(r["id"]) / Run.RECORD).stat().st_mtime)["id"]
        self.store.resolve(rid)
        self.current = rid
        return rid

    def _tools(self) -> list[Tool]:
        return [
            Tool("list_runs", "List the runs in the run store with dataset, arm, state and accuracy.", NoArgs,
                 self.list_runs),
            Tool("start_run", "Create a run from a dataset or a config file and start it in the background.",
                 StartRunArgs, self.start_run),
            Tool("run_status", "State, progress events, pending changes and approvals of a run.", RunArg,
                 self.run_status),
            Tool("show_report", "The uncertainty report of a round: metrics, uncertain classes, confused "
                 "pairs, clusters.", ReportArgs, self.show_report),
            Tool("show_cluster", "One cluster of uncertain texts: labels, keywords and example texts.",
                 ClusterArgs, self.show_cluster),
            Tool("show_samples", "Generated samples of a round, accepted or rejected, with filter reasons.",
                 SamplesArgs, self.show_samples),
            Tool("list_prompts", "Prompt template versions kept in the run.", RunArg, self.list_prompts),
            Tool("edit_prompt", "Save a new version of a prompt template in the run (used from the next "
                 "round); returns the diff.", EditPromptArgs, self.edit_prompt),
            Tool("set_config", "Change budget, rounds or filter thresholds for the next round (validated).",
                 SetConfigArgs, self.set_config),
            Tool("approve_batch", "Approve or reject a round's accepted batch before retraining.",
                 ApproveArgs, self.approve_batch),
            Tool("pause_run", "Pause a running run before its next stage.", RunArg, self.pause_run),
            Tool("resume_run", "Resume a paused run, or restart a stopped one from where it stopped.", RunArg,
                 self.resume_run),
            Tool("stop_run", "Stop a run after its current stage.", RunArg, self.stop_run),
            Tool("compare_runs", "Compare the final test metrics of two finished runs.", CompareArgs,
                 self.compare_runs),
        ]  # fmt: skip

    # -- tools -----------------------------------------------------------------------------------
    def list_runs(self, a: NoArgs) -> str:
        runs = self.store.list_runs()
        if not runs:
            return "no runs yet (start one with /start banking77 --shots 10)"
        lines = ["run | dataset | arm | state | rounds | test acc | synthetic"]
        for r in runs:
            if r["kind"] == "comparison":
                lines.append(f"{r['id']} | comparison | | {r['state']} | | |")
                continue
            lines.append(
                f"{r['id']} | {r['dataset']} | {r['arm']} | {r['state']} | {r['rounds']} | "
                f"{_pct(r['test_accuracy'])} | {'' if r['synthetic_used'] is None else r['synthetic_used']}"
            )
        return "\n".join(lines)

    def start_run(self, a: StartRunArgs) -> str:
        from activesynth.agent.config import DataConfig, RunConfig, load_config, override
        from activesynth.agent.datasets import DataError, load
        from activesynth.agent.loop import check_config

        if a.config:
            cfg_path = self.store.resolve(a.config, must_exist=False)
            if not cfg_path.is_file():
                raise StoreError(f"no config file {a.config!r} in the run store")
            cfg = load_config(cfg_path)
            if a.dataset:
                cfg = cfg.model_copy(update={"data": DataConfig(dataset=a.dataset)})
        elif a.dataset:
            cfg = RunConfig(data=DataConfig(dataset=a.dataset))
        else:
            raise StoreError("give a dataset (e.g. banking77) or a config file in the run store")
        changes = {
            "data.shots": a.shots,
            "loop.budget": a.budget,
            "loop.rounds": a.rounds,
            "arm": a.arm,
            "seed": a.seed,
        }
        cfg = override(cfg, {k: v for k, v in changes.items() if v is not None})
        check_config(cfg)
        try:
            load(cfg.data)  # bad data: one line, and no half-made run folder in the store
        except DataError as e:
            raise StoreError(str(e).replace(str(self.store.root), self.store.root.name)) from None
        rid = a.run_id or "{}-{}-{}".format(
            cfg.data.dataset or "files", a.arm, _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        )
        path = self.store.resolve(rid, must_exist=False)
        try:
            run = Run.create(path, cfg, command=["activesynth", "chat", "start", rid])
        except RunError as e:
            raise StoreError(str(e).replace(str(self.store.root), "<runs>")) from None
        if run.record().get("state") == "done":
            self.current = rid
            return f"run {rid} is already finished (see /status {rid})"
        how = self.manager.launch(run.path)
        self.current = rid
        return (
            f"run {rid}: {how}; {cfg.arm}, dataset {cfg.data.dataset or 'files'}, "
            f"shots {cfg.data.shots or 'all'}, "
            f"budget {cfg.loop.budget}, rounds {cfg.loop.rounds}. Follow it with /status."
        )

    def run_status(self, a: RunArg) -> str:
        rid = self._run_id(a.run_id)
        s = self.store.status(rid)
        if s.get("kind") == "comparison":
            return f"{rid}: comparison folder, {s['state']}"
        busy = Run.is_busy(self.store.resolve(rid))
        lines = [
            f"run {rid}: {s['state']}{' (working)' if busy else ''}; {s['arm']} on {s['dataset']}, "
            f"{s['rounds']}/{s['max_rounds']} rounds, budget {s['budget']}",
        ]
        if s["test_accuracy"] is not None:
            lines.append(
                f"final test accuracy {_pct(s['test_accuracy'])}, synthetic used {s['synthetic_used']}"
            )
        if s["paused"]:
            lines.append("paused (resume with /resume)")
        if s["stop"]:
            lines.append(f"stop requested: {s['stop']['reason']}")
        if s["overrides"]:
            lines.append(f"changes for the next round: {json.dumps(s['overrides'])}")
        if s["approvals"]:
            lines.append(f"batch decisions: {json.dumps(s['approvals'])}")
        for e in s["events"]:
            r = f" r{e['round']}" if e["round"] is not None else ""
            lines.append(f"  {e['ts'][11:19]}{r} {e['stage']}: {e['message']}")
        return "\n".join(lines)

    def show_report(self, a: ReportArgs) -> str:
        rid = self._run_id(a.run_id)
        rep = self.store.report(rid, a.round)
        m = rep["metrics"]
        lines = [f"uncertainty report of {rid}, round {rep['round']}"]
        for split in ("dev", "test"):
            if split in m:
                lines.append(
                    f"{split}: accuracy {_pct(m[split]['accuracy'])}, macro-F1 {_pct(m[split]['macro_f1'])}"
                )
        lines.append("most uncertain classes (label, mean uncertainty, dev error rate):")
        lines += [
            f"  {c['label']}: {c['mean_uncertainty']:.3f}, {c.get('dev_error_rate', 0):.2f}"
            for c in rep["per_class"]
        ]
        lines.append("confused pairs (gold -> predicted, count):")
        lines += [f"  {p['gold']} -> {p['predicted']}: {p['count']}" for p in rep["confused_pairs"]]
        lines.append("clusters (id, size, mean uncertainty, keywords):")
        lines += [
            f"  {c['id']}: {c['size']}, {c['mean_uncertainty']:.3f}, {', '.join(c['keywords'])}"
            for c in rep["clusters"]
        ]
        return "\n".join(lines)

    def show_cluster(self, a: ClusterArgs) -> str:
        rid = self._run_id(a.run_id)
        c = self.store.cluster(rid, a.cluster_id, a.round)
        lines = [
            f"cluster {c['id']} of {rid}: {c['size']} texts, mean uncertainty {c['mean_uncertainty']:.3f}",
            f"gold labels: {json.dumps(c['gold_labels'])}",
            f"predicted labels: {json.dumps(c['predicted_labels'])}",
            f"keywords: {', '.join(c['keywords'])}",
            "examples (gold -> predicted, uncertainty, text):",
        ]
        lines += [
            f"  {e.get('gold')} -> {e['predicted']}, {e['uncertainty']:.3f}: {self.q(e['text'])}"
            for e in c["examples"]
        ]
        return "\n".join(lines)

    def show_samples(self, a: SamplesArgs) -> str:
        rid = self._run_id(a.run_id)
        s = self.store.samples(rid, a.kind, a.round, a.label, a.limit)
        lines = [
            f"{rid} round {s['round']}: {s['counts']['accepted']} accepted, "
            f"{s['counts']['rejected']} rejected; "
            f"showing {len(s['samples'])} of {s['total']} {a.kind}"
        ]
        for r in s["samples"]:
            why = "; ".join(r["reasons"]) or "kept by every filter"
            verdict = "accepted" if r["accepted"] else "rejected"
            lines.append(f"- [{verdict}] {r['label']} ({r['template']}): {self.q(r['text'])}\n    {why}")
        return "\n".join(lines)

    def list_prompts(self, a: RunArg) -> str:
        rid = self._run_id(a.run_id)
        versions = self.store.prompt_versions(rid)
        if not versions:
            return f"{rid}: no prompt versions kept yet (they appear once a round generates)"
        return "\n".join(f"- {v['ref']}" for v in versions)

    def edit_prompt(self, a: EditPromptArgs) -> str:
        rid = self._run_id(a.run_id)
        res = self.store.edit_prompt(rid, a.name, a.source)
        if not res["changed"]:
            return f"{res['ref']}: unchanged"
        return f"saved {res['ref']} (family {res['family']}), used from the next round.\n{res['diff']}"

    def set_config(self, a: SetConfigArgs) -> str:
        rid = self._run_id(a.run_id)
        run = self.store.open(rid)
        check_chat_changes(a.changes)
        try:
            pending = control.set_overrides(run, a.changes)
        except ConfigError as e:
            raise StoreError(str(e)) from None
        return f"{rid}: next round uses {json.dumps(pending)}"

    def approve_batch(self, a: ApproveArgs) -> str:
        rid = self._run_id(a.run_id)
        run = self.store.open(rid)
        n = a.round or run.latest_round()
        if n is None:
            raise StoreError("the run has no rounds yet")
        control.set_approval(run, n, a.approved, a.note)
        return f"{rid} round {n}: batch {'approved' if a.approved else 'rejected'}"

    def pause_run(self, a: RunArg) -> str:
        rid = self._run_id(a.run_id)
        control.request_pause(self.store.open(rid))
        return f"{rid}: pause requested (takes effect before the next stage)"

    def resume_run(self, a: RunArg) -> str:
        rid = self._run_id(a.run_id)
        run = self.store.open(rid)
        control.request_resume(run)
        path = self.store.resolve(rid)
        if Run.is_busy(path):
            return f"{rid}: resumed"
        if run.record().get("state") == "done":
            return f"{rid}: already finished"
        control.clear_stop(run)
        return f"{rid}: {self.manager.launch(path)} (continuing where it stopped)"

    def stop_run(self, a: RunArg) -> str:
        rid = self._run_id(a.run_id)
        control.request_stop(self.store.open(rid), "stopped from chat")
        return f"{rid}: stop requested (takes effect after the current stage)"

    def compare_runs(self, a: CompareArgs) -> str:
        c = self.store.compare(a.run_a, a.run_b)
        lines = [f"metric | {c['a']} | {c['b']} | delta (b - a)"]
        for k, r in c["rows"].items():
            lines.append(f"{k} | {r['a']:.4f} | {r['b']:.4f} | {r['delta']:+.4f}")
        return "\n".join(lines)


TOOLS = [
    "list_runs",
    "start_run",
    "run_status",
    "show_report",
    "show_cluster",
    "show_samples",
    "list_prompts",
    "edit_prompt",
    "set_config",
    "approve_batch",
    "pause_run",
    "resume_run",
    "stop_run",
    "compare_runs",
]
