"""The run folder: the one place that knows its layout. Read alike by the CLI, the web page and the chat.

```
runs/<id>/config.yaml  run.json  state.sqlite  .lock  llm_cache.sqlite  usage.json  summary.json
          prompts/<name>@<sha12>.jinja2
          round-NN/ uncertainty_report.{json,md} plots/ model/ generation_plan.json prompts.jsonl
                    candidates.jsonl decisions.jsonl accepted.jsonl filter_report.json usage.json
                    generation_record.json used.json metrics.json
          export/   model/ synthetic.jsonl hf_dataset/ DATASET_CARD.md
runs/<comparison>/comparison_config.json comparison.{json,md,png} llm_cache.sqlite seed-S/<arm>/ (runs)
```
``run.json`` records versions, seeds, template hashes and state; ``state.sqlite`` keeps an event log and
key/value state (also the control channel: stop, pause, approvals, pending changes). Only one process works
on a run at a time (:meth:`Run.lock`); every file is written atomically, so a killed process leaves either the
old file or the new one. Stages get paths and plain data from here and never glob the folder themselves.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import platform
import sqlite3
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from activesynth.agent.config import RunConfig, describe
from activesynth.agent.config.base import public_command
from activesynth.agent.files import write_atomic, write_json, write_jsonl

__all__ = ["Comparison", "Round", "Run", "RunError", "RunLocked", "read_jsonl"]

_MISSING = object()


class RunError(RuntimeError):
    """A run folder that cannot be used as asked (the message is one line)."""


class RunLocked(RunError):
    """Another process holds the run."""


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("active-synthesis", "torch", "sentence-transformers", "transformers", "faiss-cpu", "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file; :class:`RunError` naming the file and
    line on a missing file, a malformed line or a line that is not an object."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: file not found")
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RunError(f"{path}:{lineno}: malformed JSON ({exc.msg}, column {exc.colno})") from None
            if not isinstance(obj, dict):
                raise RunError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


@contextlib.contextmanager
def _exclusive(lock_file: Path, busy_message: str):
    """An exclusive, non-blocking ``flock`` on ``lock_file`` (holding our pid); RunLocked if taken."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunLocked(busy_message) from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class Round:
    """One round folder (``round-NN``): the names of its artifacts and atomic reads and writes of them.

    ``rnd.file(Round.CANDIDATES)`` is a path; ``rnd.read_json(Round.METRICS, {})`` and
    ``rnd.write_jsonl(Round.ACCEPTED, rows)`` read and write.
    """

    REPORT = "uncertainty_report.json"
    REPORT_MD = "uncertainty_report.md"
    PLOTS = "plots"
    MODEL = "model"
    PLAN = "generation_plan.json"
    PROMPTS = "prompts.jsonl"
    CANDIDATES = "candidates.jsonl"
    DECISIONS = "decisions.jsonl"
    ACCEPTED = "accepted.jsonl"
    FILTER_REPORT = "filter_report.json"
    USAGE = "usage.json"
    GENERATION = "generation_record.json"
    USED = "used.json"
    METRICS = "metrics.json"

    def __init__(self, path: Path, n: int) -> None:
        self.path = Path(path)
        self.n = n

    def __repr__(self) -> str:
        return f"Round({self.path})"

    def file(self, name: str) -> Path:
        return self.path / name

    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    def read_json(self, name: str, default: Any = _MISSING) -> Any:
        """The parsed file; ``default`` when it is missing (RunError without a default)."""
        path = self.path / name
        if not path.is_file():
            if default is _MISSING:
                raise RunError(f"{path}: not written yet")
            return default
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise RunError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from None

    def write_json(self, name: str, data: Any) -> Path:
        return write_json(self.path / name, data)

    def read_jsonl(self, name: str) -> list[dict[str, Any]]:
        """Every object of a JSONL artifact; an empty list when the file is missing."""
        path = self.path / name
        return [obj for _, obj in read_jsonl(path)] if path.is_file() else []

    def write_jsonl(self, name: str, rows) -> Path:
        return write_jsonl(self.path / name, rows)


class Run:
    """A run folder. Create with :meth:`create` (under the lock), reopen with :meth:`open`."""

    CONFIG = "config.yaml"
    RECORD = "run.json"
    STATE = "state.sqlite"
    LOCK = ".lock"
    SUMMARY = "summary.json"
    USAGE = "usage.json"
    LLM_CACHE = "llm_cache.sqlite"
    PROMPTS = "prompts"
    EXPORT = "export"
    WORKER_LOG = "worker.log"

    def __init__(self, path: Path, config: RunConfig) -> None:
        self.path = Path(path)
        self.config = config
        self._lock_depth = 0

    def __repr__(self) -> str:
        return f"Run({self.path})"

    # -- life cycle --------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, config: RunConfig, command: list[str] | None = None) -> Run:
        """Create the folder under the run's lock, or reopen it when it holds a run with the same config.

        A folder holding a run with another config is refused, unless that run never started (state
        ``created``, no round): then it is rewritten with the new config, so a corrected retry into the same
        folder works. Raises :class:`RunLocked` when another process holds the folder.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RunError(f"{path}: exists and is not a folder")
        run = cls(path, config)
        if (path / cls.RECORD).exists():
            existing = cls.open(path)
            if existing.config == config:
                return existing
            if existing.record().get("state") != "created" or existing.rounds():
                raise RunError(
                    f"{path} already holds a run with a different config; choose another --out or remove it"
                )
        path.mkdir(parents=True, exist_ok=True)
        with run.lock():
            write_atomic(path / cls.CONFIG, config.to_yaml())
            record = {
                "id": path.name,
                "created": _now(),
                "command": public_command(command or sys.argv),
                "versions": _versions(),
                "seed": config.seed,
                "state": "created",
                "rounds": [],
                "templates": {},
            }
            write_json(path / cls.RECORD, record)
            run._db().close()
        return run

    @classmethod
    def open(cls, path: Path) -> Run:
        path = Path(path)
        cfg_path = path / cls.CONFIG
        if not cfg_path.is_file():
            raise RunError(f"{path}: not a run folder (no {cls.CONFIG})")
        try:
            data = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
            config = RunConfig.model_validate(data)
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise RunError(f"{cfg_path}: invalid config ({str(e).splitlines()[0]})") from None
        except ValidationError as e:
            raise RunError(f"{cfg_path}: invalid config ({describe(e)})") from None
        return cls(path, config)

    @classmethod
    def is_run(cls, path: Path) -> bool:
        return (Path(path) / cls.RECORD).is_file() and (Path(path) / cls.CONFIG).is_file()

    # -- record and state --------------------------------------------------------------------
    def record(self) -> dict:
        try:
            return json.loads((self.path / self.RECORD).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise RunError(f"{self.path / self.RECORD}: unreadable ({e})") from None

    def update_record(self, **fields) -> dict:
        rec = self.record()
        rec.update(fields)
        rec["updated"] = _now()
        write_json(self.path / self.RECORD, rec)
        return rec

    def summary(self) -> dict | None:
        """The finished run's ``summary.json``, or None."""
        path = self.path / self.SUMMARY
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def write_summary(self, summary: dict) -> Path:
        return write_json(self.path / self.SUMMARY, summary)

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path / self.STATE), timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS events (ts TEXT, round INTEGER, stage TEXT, message TEXT)")
        db.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT)")
        return db

    def log_event(self, stage: str, message: str, round_: int | None = None) -> None:
        with contextlib.closing(self._db()) as db:
            db.execute("INSERT INTO events VALUES (?, ?, ?, ?)", (_now(), round_, stage, message))
            db.commit()

    def events(self, after: int = 0) -> list[dict]:
        """Events from the ``after``-th on (0-based), each with its index ``i``."""
        with contextlib.closing(self._db()) as db:
            rows = db.execute(
                "SELECT rowid, ts, round, stage, message FROM events WHERE rowid > ? ORDER BY rowid", (after,)
            ).fetchall()
        keys = ("i", "ts", "round", "stage", "message")
        return [dict(zip(keys, (r[0] - 1, *r[1:]), strict=True)) for r in rows]

    def set_state(self, key: str, value) -> None:
        with contextlib.closing(self._db()) as db:
            db.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (key, json.dumps(value)))
            db.commit()

    def get_state(self, key: str, default=None):
        with contextlib.closing(self._db()) as db:
            row = db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    # -- locking -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self):
        """Hold the run exclusively; another process (or another ``Run`` object) gets :class:`RunLocked`
        at once. Re-entrant on the same object, so a command can lock before its first write and call
        code that locks again."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield self
            finally:
                self._lock_depth -= 1
            return
        with _exclusive(self.path / self.LOCK, f"{self.path}: another process is working on this run"):
            self._lock_depth = 1
            try:
                yield self
            finally:
                self._lock_depth = 0

    @property
    def locked_here(self) -> bool:
        """True while this object holds the lock."""
        return self._lock_depth > 0

    @classmethod
    def is_busy(cls, path: Path) -> bool:
        """True while some process holds the run's lock (it is being worked on)."""
        lock = Path(path) / cls.LOCK
        if not lock.exists():
            return False
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    # -- rounds and artifacts ----------------------------------------------------------------
    def round(self, n: int, create: bool = False) -> Round:
        rnd = Round(self.path / f"round-{n:02d}", n)
        if create:
            rnd.path.mkdir(parents=True, exist_ok=True)
        return rnd

    def round_dir(self, n: int, create: bool = False) -> Path:
        """``<run>/round-NN`` (the folder of :meth:`round`)."""
        return self.round(n, create).path

    def rounds(self) -> list[int]:
        out = []
        for p in self.path.glob("round-*"):
            suffix = p.name.removeprefix("round-")
            if p.is_dir() and suffix.isdigit():
                out.append(int(suffix))
        return sorted(out)

    def latest_round(self, having: str | None = None) -> int | None:
        """The last round (that has the artifact ``having``, when given)."""
        r = [n for n in self.rounds() if having is None or self.round(n).has(having)]
        return r[-1] if r else None

    def report(self, n: int | None = None) -> dict:
        n = n if n is not None else self.latest_round()
        if n is None:
            raise RunError(f"{self.path}: no rounds yet")
        rnd = self.round(n)
        if not rnd.has(Round.REPORT):
            raise RunError(f"{rnd.file(Round.REPORT)}: no uncertainty report in round {n}")
        return rnd.read_json(Round.REPORT)

    def usage_files(self) -> list[Path]:
        """Every round's ``usage.json`` in round order."""
        return [self.round(n).file(Round.USAGE) for n in self.rounds() if self.round(n).has(Round.USAGE)]

    @property
    def prompts_dir(self) -> Path:
        """Where the run keeps every template version it used (``<name>@<sha12>.jinja2``)."""
        return self.path / self.PROMPTS

    @property
    def export_dir(self) -> Path:
        return self.path / self.EXPORT

    def llm_cache_path(self) -> Path:
        """The LLM call cache: the config's ``generate.cache_path`` or ``<run>/llm_cache.sqlite``."""
        return self.config.generate.cache_path or (self.path / self.LLM_CACHE)

    def model_dir(self, n: int | None = None) -> Path:
        """The classifier of round ``n``; without ``n`` the exported final one, else the latest round's."""
        if n is None:
            final = self.export_dir / "model"
            if (final / "classifier.json").exists():
                return final
            n = self.latest_round(having=Round.MODEL)
            if n is None:
                raise RunError(f"{self.path}: no trained model yet")
        path = self.round(n).file(Round.MODEL)
        if not (path / "classifier.json").exists():
            raise RunError(f"{path}: no saved classifier for round {n}")
        return path


class Comparison:
    """A folder of arm runs over seeds (``seed-S/<arm>``) with a shared LLM cache and the comparison table."""

    CONFIG = "comparison_config.json"
    RESULT = "comparison.json"
    TABLE = "comparison.md"
    PLOT = "comparison.png"
    LLM_CACHE = "llm_cache.sqlite"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def is_comparison(cls, path: Path) -> bool:
        p = Path(path)
        return (p / cls.CONFIG).is_file() or (p / cls.RESULT).is_file()

    def arm_path(self, seed: int, arm: str) -> Path:
        return self.path / f"seed-{seed}" / arm

    def arm_paths(self) -> list[Path]:
        return sorted(p for p in self.path.glob("seed-*/*") if Run.is_run(p))

    def file(self, name: str) -> Path:
        return self.path / name

    def saved(self) -> dict | None:
        """The config and seeds the comparison was started with, or None."""
        p = self.path / self.CONFIG
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None

    def save(self, config: RunConfig, seeds: list[int]) -> None:
        write_json(self.path / self.CONFIG, {"config": config.model_dump(mode="json"), "seeds": seeds})

    @contextlib.contextmanager
    def lock(self):
        """Hold the comparison folder exclusively (each arm run is locked on its own as well)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with _exclusive(self.path / Run.LOCK, f"{self.path}: another process is working on this comparison"):
            yield self
