"""Read and edit runs under one root folder (the run store). Every path is resolved inside the root: ids
like ``b77`` or ``cmp/seed-0/active`` are accepted, ``..`` or absolute paths that leave the root are not.
Returns plain dicts for the chat tools and the web page alike."""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import Any

from activesynth.agent.runs import Comparison, Round, Run

__all__ = ["PREVIEW_VARIABLES", "RunStore", "StoreError", "public_message", "redact"]

_MAX_DEPTH = 4
_SECRET = re.compile(r"\b(sk-[A-Za-z0-9_\-]{8,}|hf_[A-Za-z0-9]{8,}|Bearer\s+[A-Za-z0-9._\-]{8,})")
# an absolute path of two or more parts (not the end of a URL or of a relative path)
_ABS_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s'\"/<>|]+/)+[^\s'\"/<>|]*")
_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,99}(@[0-9a-f]{6,64})?")

#: What ``edit_prompt`` renders a new template with before saving it: every variable the generator passes
#: (``agent.synthesize``), filled the way a real round fills them, so branches on examples, a source text, a
#: contrast label or a cluster run at check time. A second render uses the empty values of the same types.
PREVIEW_VARIABLES: dict[str, Any] = {
    "task": "Messages that customers send to their bank",
    "label": "card_arrival",
    "label_text": "card arrival",
    "label_definition": "asks where a card that was ordered is",
    "examples": ["Where is my new card?", "My card still has not arrived.", "When will the card come?"],
    "n": 3,
    "cluster_description": "keywords: card, arrive, week",
    "contrast_label": "card_delivery_estimate",
    "contrast_label_text": "card delivery estimate",
    "contrast_examples": ["How long does card delivery take?", "What is the delivery time for cards?"],
    "source_text": "I ordered a card two weeks ago and nothing came.",
    "method": "concretize",
    "method_instruction": "adds concrete details (names, amounts, dates)",
}


class StoreError(ValueError):
    """A request the run store cannot serve (unknown run, path outside the root, bad argument)."""


def redact(text: str) -> str:
    """Remove secrets: values of environment variables that look like keys, and key-shaped tokens."""
    for name, value in os.environ.items():
        if value and len(value) >= 8 and re.search(r"KEY|TOKEN|SECRET|PASSWORD", name, re.I):
            text = text.replace(value, "[secret]")
    return _SECRET.sub("[secret]", text)


def public_message(text: str, root: Path | str | None = None) -> str:
    """``text`` fit to show a client: the first line, the run store's path as its folder name, other
    absolute paths cut to their last part, secrets redacted."""
    text = str(text).strip()
    text = text.splitlines()[0] if text else ""
    if root is not None:
        root = Path(root)
        text = text.replace(str(root), root.name)
    return redact(_ABS_PATH.sub(lambda m: "…/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], text))


def _read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


class RunStore:
    """All runs below ``root``."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    # -- paths -------------------------------------------------------------------------------------
    def resolve(self, run_id: str, must_exist: bool = True) -> Path:
        """The folder of ``run_id`` inside the root; refuses anything that would leave it."""
        if not run_id or "\x00" in run_id:
            raise StoreError(f"bad run id {run_id!r}")
        if Path(run_id).is_absolute():
            raise StoreError("a run id is a folder name inside the run store, not an absolute path")
        path = (self.root / run_id).resolve()
        if path != self.root and self.root not in path.parents:
            raise StoreError(f"run id {run_id!r} leaves the run store")
        if must_exist and not Run.is_run(path) and not Comparison.is_comparison(path):
            raise StoreError(f"no run {run_id!r} under {self.root.name}/ (see /runs)")
        return path

    def run_id(self, path: Path) -> str:
        return path.resolve().relative_to(self.root).as_posix()

    def open(self, run_id: str) -> Run:
        path = self.resolve(run_id)
        if not Run.is_run(path):
            raise StoreError(f"{run_id!r} is a comparison folder; name one of its runs")
        return Run.open(path)

    def file(self, run_id: str, rel: str) -> Path:
        """A PNG plot of a run (``round-NN/plots/*.png`` or ``comparison.png``); nothing else is served."""
        base = self.resolve(run_id)
        path = (base / rel).resolve()
        ok = re.fullmatch(rf"(round-\d\d/{Round.PLOTS}/[\w.\-]+|comparison)\.png", rel) is not None
        if not ok or base not in path.parents or not path.is_file():
            raise StoreError(f"no such plot {rel!r}")
        return path

    # -- listing and status ------------------------------------------------------------------------
    def list_runs(self) -> list[dict]:
        """Runs and comparison folders below the root. A symbolic link that leads outside the root (or
        nowhere) is skipped, as is a second way to the same folder; the rest is listed."""
        found: list[dict] = []
        seen: set[Path] = set()

        def inside(p: Path) -> Path | None:
            try:
                real = p.resolve()
            except (OSError, RuntimeError):  # a loop of links
                return None
            return real if (real == self.root or self.root in real.parents) and real.is_dir() else None

        def walk(d: Path, depth: int) -> None:
            real = inside(d)
            if depth > _MAX_DEPTH or real is None or real in seen:
                return
            seen.add(real)
            if Run.is_run(d):
                found.append(self.brief(d))
                return
            if Comparison.is_comparison(d):
                found.append({"id": self.run_id(d), "kind": "comparison", "state": self._cmp_state(d)})
            try:
                children = sorted(p for p in d.iterdir() if not p.name.startswith("."))
            except OSError:
                return
            for child in children:
                walk(child, depth + 1)

        walk(self.root, 0)
        return found

    def _cmp_state(self, d: Path) -> str:
        return "done" if Comparison(d).file(Comparison.RESULT).is_file() else "running or stopped"

    def brief(self, path: Path) -> dict:
        """A row of the run list; a run whose files cannot be read is listed with what is known."""
        import yaml

        rec = _read_json(path / Run.RECORD, {}) or {}
        try:
            cfg = yaml.safe_load((path / Run.CONFIG).read_text(encoding="utf-8")) or {}
        except (OSError, ValueError):
            cfg = {}
        summary = _read_json(path / Run.SUMMARY)
        acc = summary["final"]["test"]["accuracy"] if summary else None
        rounds = Run(path, None).rounds()
        return {
            "id": self.run_id(path),
            "kind": "run",
            "dataset": (cfg.get("data") or {}).get("dataset") or "files",
            "arm": cfg.get("arm", "active"),
            "state": rec.get("state", "?"),
            "rounds": len(rounds),
            "test_accuracy": acc,
            "synthetic_used": summary.get("synthetic_used") if summary else None,
            "stop_reason": rec.get("stop_reason"),
        }

    def status(self, run_id: str, n_events: int = 8) -> dict:
        from activesynth.agent import control

        path = self.resolve(run_id)
        if not Run.is_run(path):
            return {"id": run_id, "kind": "comparison", "state": self._cmp_state(path)}
        run = self.open(run_id)
        out = self.brief(path)
        out.update(
            {
                "budget": run.config.loop.budget,
                "max_rounds": run.config.loop.rounds,
                "paused": control.should_pause(run),
                "stop": run.get_state("control.stop"),
                "overrides": run.get_state("control.overrides", {}) or {},
                "approvals": control.approvals(run),
                "events": [
                    {**e, "message": str(e["message"]).replace(str(self.root), self.root.name)}
                    for e in run.events()[-n_events:]
                ],
            }
        )
        return out

    def events(self, run_id: str, after: int = 0) -> list[dict]:
        """Events from the ``after``-th on, each with its index ``i``."""
        return self.open(run_id).events(after)

    # -- rounds and curves -------------------------------------------------------------------------
    def rounds_table(self, run_id: str) -> list[dict]:
        """One row per round: from summary.json when finished, else from round-NN/metrics.json."""
        run = self.open(run_id)
        summary = run.summary()
        if summary:
            return summary["rounds"]
        rows = []
        for n in run.rounds():
            m = _read_json(run.round(n).file(Round.METRICS)) or {}
            if "entry" in m:
                rows.append(m["entry"])
            elif "test" in m:
                rows.append(
                    {
                        "round": m.get("round", n) - 1,
                        "stage": "report",
                        "test_accuracy": m["test"].get("accuracy"),
                        "test_macro_f1": m["test"].get("macro_f1"),
                    }
                )
        return rows

    def curves(self, run_id: str) -> dict:
        """Test accuracy / macro-F1 per round for each arm (a comparison folder) or for the run itself."""
        path = self.resolve(run_id)
        series = []
        if Run.is_run(path):
            arm = self.brief(path)["arm"]
            series.append({"name": arm, "rows": self.rounds_table(run_id)})
        else:
            for arm_path in Comparison(path).arm_paths():
                sub = self.run_id(arm_path)
                series.append({"name": sub.split("/", 1)[-1], "rows": self.rounds_table(sub)})
        for s in series:
            s["points"] = [
                {"round": r["round"], "accuracy": r.get("test_accuracy"), "macro_f1": r.get("test_macro_f1")}
                for r in s.pop("rows")
                if r.get("test_accuracy") is not None
            ]
        comparison = _read_json(Comparison(path).file(Comparison.RESULT))
        return {"series": series, "table": comparison.get("table") if comparison else None}

    def plots(self, run_id: str) -> list[str]:
        path = self.resolve(run_id)
        out = []
        if Run.is_run(path):
            run = Run(path, None)
            for n in run.rounds():
                found = sorted(run.round(n).file(Round.PLOTS).glob("*.png"))
                out += [p.relative_to(path).as_posix() for p in found]
        if Comparison(path).file(Comparison.PLOT).is_file():
            out.append(Comparison.PLOT)
        return out

    # -- report, clusters, samples -----------------------------------------------------------------
    def _round(self, run, round_: int | None) -> int:
        n = round_ if round_ is not None else run.latest_round()
        if n is None:
            raise StoreError("the run has no rounds yet")
        return n

    def report(self, run_id: str, round_: int | None = None, top: int = 10) -> dict:
        from activesynth.agent.runs import RunError

        run = self.open(run_id)
        try:
            rep = run.report(round_)
        except RunError as e:
            raise StoreError(str(e)) from None
        return {
            "round": self._round(run, round_),
            "metrics": {
                k: {m: v for m, v in d.items() if m != "per_class"} for k, d in rep["metrics"].items()
            },
            "per_class": sorted(rep["per_class"], key=lambda r: -r.get("mean_uncertainty", 0))[:top],
            "confused_pairs": rep["confused_pairs"][:top],
            "clusters": [
                {k: c[k] for k in ("id", "size", "mean_uncertainty", "keywords", "gold_labels")}
                for c in rep["clusters"]
            ],
        }

    def cluster(self, run_id: str, cluster_id: int, round_: int | None = None) -> dict:
        run = self.open(run_id)
        rep = run.report(round_)
        for c in rep["clusters"]:
            if int(c["id"]) == cluster_id:
                return c
        raise StoreError(f"no cluster {cluster_id} (clusters: {[c['id'] for c in rep['clusters']]})")

    def samples(
        self,
        run_id: str,
        kind: str = "all",
        round_: int | None = None,
        label: str | None = None,
        limit: int = 20,
    ) -> dict:
        """Candidates with their filter decisions (decisions.jsonl joined with candidates.jsonl)."""
        run = self.open(run_id)
        n = self._round(run, round_)
        rnd = run.round(n)
        cands = {c["id"]: c for c in rnd.read_jsonl(Round.CANDIDATES)}
        rows = []
        counts = {"accepted": 0, "rejected": 0}
        for d in rnd.read_jsonl(Round.DECISIONS):
            c = cands.get(d["id"], {})
            accepted = bool(d.get("accepted"))
            counts["accepted" if accepted else "rejected"] += 1
            if (kind == "accepted" and not accepted) or (kind == "rejected" and accepted):
                continue
            if label and c.get("label") != label:
                continue
            reasons = [
                f"{x['evaluator']}: {x.get('reason', '')}"
                for x in d.get("decisions", [])
                if x["verdict"] != "keep"
            ]
            rows.append(
                {
                    "id": d["id"],
                    "accepted": accepted,
                    "label": c.get("label"),
                    "template": c.get("template"),
                    "text": c.get("text", ""),
                    "reasons": reasons,
                }
            )
        return {"round": n, "counts": counts, "total": len(rows), "samples": rows[:limit]}

    # -- prompts ---------------------------------------------------------------------------------
    def prompt_versions(self, run_id: str) -> list[dict]:
        run = self.open(run_id)
        out = []
        for p in sorted(run.prompts_dir.glob("*.jinja2"), key=lambda p: p.stat().st_mtime):
            name, _, sha = p.stem.partition("@")
            out.append({"ref": p.stem, "name": name, "sha12": sha, "source": p.read_text(encoding="utf-8")})
        return out

    def edit_prompt(self, run_id: str, name: str, source: str) -> dict:
        """Save ``source`` as a new version of template ``name`` in the run (``prompts/<name>@<sha12>``),
        after checking it: same header rules, no variables the generator does not provide, and it must render
        in the project's sandbox (``activesynth.prompts``) with realistic values (:data:`PREVIEW_VARIABLES`)
        and with empty ones, so every branch a round can take is tried. Selects it for the next round;
        returns the ref and a unified diff. ``name`` is a template name or ``name@sha12``, never a path."""
        import tempfile

        from activesynth.agent import control
        from activesynth.prompts import TemplateError, get_template, load_template, snapshot

        if not _TEMPLATE_NAME.fullmatch(name or ""):
            raise StoreError(f"bad template name {name!r}: give a name like self_instruct_list or name@sha12")
        run = self.open(run_id)
        pdir = run.path / "prompts"
        try:
            base = get_template(name, [pdir])
        except TemplateError as e:
            raise StoreError(public_message(e, self.root)) from None
        with tempfile.TemporaryDirectory() as tmp:
            f = Path(tmp) / f"{base.name}.jinja2"
            f.write_text(source, encoding="utf-8")
            try:
                new = load_template(f, name=base.name)
            except TemplateError as e:
                raise StoreError(public_message(str(e).replace(str(f), "the new template"))) from None
        extra = sorted(set(new.variables) - set(base.variables))
        if extra:
            raise StoreError(f"unknown variables {extra}; this template may use {list(base.variables)}")
        full = {v: PREVIEW_VARIABLES.get(v, f"sample {v}") for v in new.variables}
        empty = {v: type(x)() for v, x in full.items()}
        try:
            preview = new.render(**full).text
            new.render(**empty)
        except TemplateError as e:
            raise StoreError(f"the template does not render in the sandbox: {public_message(e)}") from None
        if new.version == base.version:
            return {"ref": base.ref, "diff": "", "preview": preview, "changed": False}
        snapshot(new, pdir)
        if base.path.parent != pdir:
            snapshot(base, pdir)  # keep the version it replaces next to it
        control.set_overrides(run, {f"generate.planner.templates.{new.family}": new.ref})
        diff = "".join(
            difflib.unified_diff(
                base.source.splitlines(keepends=True),
                source.splitlines(keepends=True),
                fromfile=base.ref,
                tofile=new.ref,
            )
        )
        return {"ref": new.ref, "family": new.family, "diff": diff, "preview": preview, "changed": True}

    # -- comparison ------------------------------------------------------------------------------
    def compare(self, run_a: str, run_b: str) -> dict:
        def final(rid: str) -> dict:
            s = _read_json(self.resolve(rid) / Run.SUMMARY)
            if not s:
                raise StoreError(f"{rid}: no summary.json (the run has not finished)")
            return s

        sa, sb = final(run_a), final(run_b)
        rows: dict[str, Any] = {}
        for key in ("accuracy", "macro_f1", "ece"):
            va, vb = sa["final"]["test"][key], sb["final"]["test"][key]
            rows[key] = {"a": va, "b": vb, "delta": vb - va}
        for key in ("synthetic_used", "tokens"):
            rows[key] = {"a": sa[key], "b": sb[key], "delta": sb[key] - sa[key]}
        return {"a": run_a, "b": run_b, "rows": rows}
