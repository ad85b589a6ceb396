"""One run = one self-describing folder, read alike by the CLI, the web page and the chat.

```
runs/<id>/config.yaml  run.json  state.sqlite  .lock
          round-01/ uncertainty_report.{json,md} plots/ model/ generation_plan.json candidates.jsonl ...
```
``run.json`` records versions, seeds, template hashes and state; ``state.sqlite`` keeps an event log and
key/value state. Only one process may work on a run at a time (:meth:`Run.lock`).
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
from importlib import metadata
from pathlib import Path

import yaml

from activesynth.agent.config import RunConfig
from activesynth.agent.files import write_atomic

__all__ = ["Run", "RunError", "RunLocked"]


class RunError(RuntimeError):
    """A run folder that cannot be used as asked."""


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


class Run:
    """A run folder. Create with :meth:`create`, reopen with :meth:`open`."""

    def __init__(self, path: Path, config: RunConfig) -> None:
        self.path = Path(path)
        self.config = config
        self._lock_fd: int | None = None

    # -- life cycle --------------------------------------------------------------------------
    @classmethod
    def create(
        cls, path: Path, config: RunConfig, command: list[str] | None = None, exist_ok: bool = True
    ) -> Run:
        """Create the folder (or reuse it when it holds a run with the same config)."""
        path = Path(path)
        if (path / "run.json").exists():
            existing = cls.open(path)
            if existing.config != config:
                raise RunError(
                    f"{path} already holds a run with a different config; choose another --out or remove it"
                )
            if not exist_ok:
                raise RunError(f"{path} already holds a run")
            return existing
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
        record = {
            "id": path.name,
            "created": _now(),
            "command": command or sys.argv,
            "versions": _versions(),
            "seed": config.seed,
            "state": "created",
            "rounds": [],
            "templates": {},
        }
        (path / "run.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
        run = cls(path, config)
        run._db().close()
        return run

    @classmethod
    def open(cls, path: Path) -> Run:
        path = Path(path)
        cfg_path = path / "config.yaml"
        if not cfg_path.exists():
            raise RunError(f"{path}: not a run folder (no config.yaml)")
        try:
            data = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
            config = RunConfig.model_validate(data)
        except Exception as e:
            first = str(e).splitlines()[0]
            raise RunError(f"{cfg_path}: invalid config ({first})") from None
        return cls(path, config)

    # -- record and state --------------------------------------------------------------------
    def record(self) -> dict:
        return json.loads((self.path / "run.json").read_text(encoding="utf-8"))

    def update_record(self, **fields) -> dict:
        rec = self.record()
        rec.update(fields)
        rec["updated"] = _now()
        write_atomic(self.path / "run.json", json.dumps(rec, indent=2))
        return rec

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path / "state.sqlite"), timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS events (ts TEXT, round INTEGER, stage TEXT, message TEXT)")
        db.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT)")
        return db

    def log_event(self, stage: str, message: str, round_: int | None = None) -> None:
        with contextlib.closing(self._db()) as db:
            db.execute("INSERT INTO events VALUES (?, ?, ?, ?)", (_now(), round_, stage, message))
            db.commit()

    def events(self) -> list[dict]:
        with contextlib.closing(self._db()) as db:
            rows = db.execute("SELECT ts, round, stage, message FROM events ORDER BY rowid").fetchall()
        return [dict(zip(("ts", "round", "stage", "message"), r, strict=True)) for r in rows]

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
        """Hold the run exclusively; a second process gets :class:`RunLocked` at once."""
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLocked(f"{self.path}: another process is working on this run") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            yield self
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- rounds and artifacts ----------------------------------------------------------------
    def round_dir(self, n: int, create: bool = False) -> Path:
        d = self.path / f"round-{n:02d}"
        if create:
            d.mkdir(parents=True, exist_ok=True)
        return d

    def rounds(self) -> list[int]:
        return sorted(int(p.name.split("-")[1]) for p in self.path.glob("round-[0-9][0-9]") if p.is_dir())

    def latest_round(self) -> int | None:
        r = self.rounds()
        return r[-1] if r else None

    def report(self, n: int | None = None) -> dict:
        n = n if n is not None else self.latest_round()
        if n is None:
            raise RunError(f"{self.path}: no rounds yet")
        p = self.round_dir(n) / "uncertainty_report.json"
        if not p.exists():
            raise RunError(f"{p}: no uncertainty report in round {n}")
        return json.loads(p.read_text(encoding="utf-8"))

    def embedder(self):
        from activesynth.agent.embed import Embedder

        e = self.config.embed
        return Embedder(e.model, cache_dir=e.cache_dir, precision=e.precision, batch_size=e.batch_size)

    def load_dataset(self):
        from activesynth.agent.datasets import load

        return load(self.config.data)

    def load_classifier(self, n: int, embedder=None):
        from activesynth.agent.classifier import load_classifier

        model_dir = self.round_dir(n) / "model"
        if not (model_dir / "classifier.json").exists():
            raise RunError(f"{model_dir}: no saved classifier for round {n}")
        return load_classifier(model_dir, embedder or self.embedder())
