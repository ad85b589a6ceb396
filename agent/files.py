"""Atomic file writes: a killed process never leaves half a file behind (run folders are resumable)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["cache_dir", "write_atomic", "write_json", "write_jsonl"]


def cache_dir() -> Path:
    """Where caches live (embeddings, assembled and dequantized models): ``$ACTIVESYNTH_CACHE`` or
    ``~/.cache/active-synthesis``."""
    env = os.environ.get("ACTIVESYNTH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "active-synthesis"


def write_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON."""
    return write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    """Atomically write one JSON object per line."""
    return write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
