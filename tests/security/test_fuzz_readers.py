"""Fuzz the file readers: whatever bytes a ``--data``/``--train`` file holds, reading it either gives a valid
load or a :class:`DataError` whose message is one line with no raw control character; never another exception
type, never a traceback.

Random bytes under every suffix the readers dispatch on, random CSV/TSV (headers with duplicates and control
characters, every quoting style and none, cut files, stray quotes, several encodings), random JSON lines
(duplicate keys, values of every JSON type, broken lines), random Parquet tables, and ``.bz2`` files that are
cut, bit-flipped or followed by junk. Each file goes through :func:`read_table` and :func:`load` (as ``data=``
and as train/dev/test). Hypothesis runs derandomized (same examples every run) and without its database.
"""

from __future__ import annotations

import bz2
import csv
import io
import itertools
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activesynth.agent.config import DataConfig
from activesynth.agent.datasets import DataError, Dataset, load, read_table

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=120,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

_names = itertools.count()

# characters that break parsers and terminals: delimiters, quotes, line breaks of every kind, NUL, ESC, DEL,
# C1 controls, a line separator, a bidi override, a BOM, an astral character
NASTY = list(",\t\";\n\r '\\") + ["\x00", "\x1b", "\x1b[31m", "\x07", "\x7f", "\x85", "\x9b", "\u2028"]
NASTY += ["\u202e", "\ufeff", "\U0001f600", "é", "text", "label"]
cell = st.lists(st.sampled_from(NASTY) | st.characters(codec="utf-8"), max_size=8).map("".join)
plain = st.sampled_from(["how do I top up", "card lost", "rate?", "hello world", "x", "  ", ""])
label = st.sampled_from(["a", "b", "c"]) | cell
ENCODINGS = ["utf-8"] * 6 + ["utf-8-sig", "utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252"]
ABC = st.sampled_from(["a", "b", "c"])


def assert_one_line(err: DataError) -> None:
    msg = str(err)
    assert msg, "empty message"
    assert all(ch.isprintable() for ch in msg), f"raw control character in {msg!r}"
    assert len(msg) < 1500, f"message of {len(msg)} characters"
    assert err.args == (msg,)


def assert_valid_rows(rows, with_labels: bool) -> None:
    assert rows.texts, "a load without texts"
    assert len(rows.texts) == len(rows.rows)
    assert (rows.labels is not None) == with_labels
    for t in rows.texts + (rows.labels or []):
        assert t and t == t.strip() and "\x00" not in t
        t.encode("utf-8")  # it can be written back
    if with_labels:
        assert len(rows.labels) == len(rows.texts)


def assert_valid_dataset(ds: Dataset) -> None:
    assert isinstance(ds, Dataset)
    assert len(ds.labels) >= 2
    assert len(ds.train) and len(ds.dev) and len(ds.test)
    assert ds.select is None or len(ds.select)
    known = set(ds.train.labels)
    assert set(ds.dev.labels) <= known and set(ds.test.reveal("evaluation")[1]) <= known
    for t in ds.train.texts + ds.dev.texts:
        t.encode("utf-8")


def try_read(path: Path, **kw):
    try:
        return read_table(path, **kw)
    except DataError as e:
        assert_one_line(e)
        return None


def try_load(cfg: dict) -> Dataset | None:
    try:
        ds = load(DataConfig(**cfg))
    except DataError as e:
        assert_one_line(e)
        return None
    assert_valid_dataset(ds)
    return ds


def exercise(path: Path, selection: float = 0.0) -> None:
    """Read ``path`` every way a user can hand it over; only valid loads and one-line errors may come out."""
    rows = try_read(path)
    if rows is not None:
        assert_valid_rows(rows, with_labels=True)
    pool = try_read(path, label_column=None)
    if pool is not None:
        assert_valid_rows(pool, with_labels=False)
    try_load({"data": path, "selection_fraction": selection, "pii_scrub": False})
    try_load({"train": path, "dev": path, "test": path, "selection_fraction": selection})


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def write(folder: Path, suffix: str, content: bytes) -> Path:
    path = folder / f"f{next(_names)}{suffix}"
    path.write_bytes(content)
    return path


SUFFIXES = [
    ".csv",
    ".tsv",
    ".txt",
    ".jsonl",
    ".json",
    ".ndjson",
    ".csv.bz2",
    ".jsonl.bz2",
    ".parquet",
    ".bz2",
]


@FUZZ
@given(content=st.binary(max_size=600), suffix=st.sampled_from(SUFFIXES + [".xlsx", ""]))
def test_random_bytes(fuzz_dir, content, suffix):
    exercise(write(fuzz_dir, suffix, content))


def _table(header: list[str], rows: list[list[str]], delim: str, style: str, newline: str) -> str:
    if style == "raw":  # no quoting at all: delimiters, quotes and line breaks in cells break the structure
        return newline.join(delim.join(r) for r in [header, *rows]) + newline
    buf = io.StringIO()
    quoting = {"minimal": csv.QUOTE_MINIMAL, "all": csv.QUOTE_ALL, "nonnumeric": csv.QUOTE_NONNUMERIC}[style]
    w = csv.writer(buf, delimiter=delim, quoting=quoting, lineterminator=newline)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


@st.composite
def tables(draw, suffix: str = ".csv"):
    """A CSV/TSV text: half of them tidy (text, label, maybe a note; labels a/b/c; up to 90 rows, so some
    split and load), half wild (random header with duplicates and control characters, random cells)."""
    if draw(st.booleans()):
        columns = draw(st.permutations(["text", "label", "note"]).map(list))[: draw(st.integers(2, 3))]
        n = draw(st.integers(0, 90))
        rows = [
            [
                f"{draw(plain)} {i}" if c == "text" else draw(ABC) if c == "label" else draw(cell)
                for c in columns
            ]
            for i in range(n)
        ]
        delim = "," if ".csv" in suffix else "\t"
        style = draw(st.sampled_from(["minimal", "minimal", "all", "raw"]))
    else:
        columns = draw(
            st.lists(st.sampled_from(["text", "label", "note"]) | cell, min_size=0, max_size=5)
            | st.permutations(["text", "label"]).map(list)
        )
        n = draw(st.integers(0, 40))
        rows = [[draw(plain | cell) if c != "label" else draw(label) for c in columns] for _ in range(n)]
        if rows and draw(st.booleans()):  # ragged rows
            rows[draw(st.integers(0, len(rows) - 1))] = draw(st.lists(cell, max_size=4))
        delim = draw(st.sampled_from([",", "\t", ";"]))
        style = draw(st.sampled_from(["minimal", "all", "nonnumeric", "raw"]))
    text = _table(columns, rows, delim, style, draw(st.sampled_from(["\n", "\r\n", "\r"])))
    edit = draw(st.sampled_from(["none", "none", "none", "cut", "quote", "nul", "bom"]))
    if text and edit != "none":
        at = draw(st.integers(0, len(text)))
        text = {
            "cut": text[:at],
            "quote": text[:at] + '"' + text[at:],
            "nul": text[:at] + "\x00" + text[at:],
            "bom": "\ufeff" + text,
        }[edit]
    return text


@FUZZ
@given(
    data=st.data(),
    suffix=st.sampled_from([".csv", ".tsv", ".txt", ".csv.bz2"]),
    encoding=st.sampled_from(ENCODINGS),
    selection=st.sampled_from([0.0, 0.5]),
)
def test_random_csv_and_tsv(fuzz_dir, data, suffix, encoding, selection):
    raw = data.draw(tables(suffix)).encode(encoding, errors="replace")
    if suffix.endswith(".bz2"):
        raw = bz2.compress(raw)
    exercise(write(fuzz_dir, suffix, raw), selection)


json_scalar = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | plain
    | cell
    | label
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(cell, inner, max_size=3),
    max_leaves=6,
)


@st.composite
def json_lines(draw):
    """JSON lines: half tidy (records of text and a/b/c labels, now and then a broken one), half wild."""
    tidy = draw(st.booleans())
    n = draw(st.integers(0, 90 if tidy else 40))
    wild = ["record"] * 3 + ["dup", "other", "broken", "blank"]
    flaw = draw(st.sampled_from(["none", "none", "dup", "other", "broken", "blank"]))
    flaw_at = draw(st.integers(0, max(0, n - 1)))
    lines = []
    for i in range(n):
        if tidy:  # good records with at most one flaw
            kind = flaw if i == flaw_at and flaw != "none" else "record"
        else:
            kind = draw(st.sampled_from(wild))
        if kind in ("record", "dup"):
            if tidy:
                rec = {"text": f"{draw(plain)} {i}", "label": draw(ABC)}
            else:
                rec = {"text": draw(plain | json_value), "label": draw(label | json_value)}
                rec.update(draw(st.dictionaries(cell, json_value, max_size=2)))
            line = json.dumps(rec, ensure_ascii=draw(st.booleans()))
            if kind == "dup":  # a key twice: json keeps the last one
                key = draw(st.sampled_from(["text", "label"]))
                line = line[:-1] + f", {json.dumps(key)}: {json.dumps(draw(plain))}}}"
        elif kind == "other":
            line = json.dumps(draw(json_value))
        elif kind == "broken":
            good = json.dumps({"text": draw(plain), "label": draw(label)})
            line = good[: draw(st.integers(0, len(good)))] + draw(cell)
        else:
            line = draw(st.sampled_from(["", "   ", "\r"]))
        lines.append(line)
    return draw(st.sampled_from(["\n", "\r\n"])).join(lines)


@FUZZ
@given(
    text=json_lines(),
    suffix=st.sampled_from([".jsonl", ".json", ".ndjson", ".jsonl.bz2"]),
    encoding=st.sampled_from(ENCODINGS),
    selection=st.sampled_from([0.0, 0.5]),
)
def test_random_json_lines(fuzz_dir, text, suffix, encoding, selection):
    raw = text.encode(encoding, errors="replace")
    if suffix.endswith(".bz2"):
        raw = bz2.compress(raw)
    exercise(write(fuzz_dir, suffix, raw), selection)


@FUZZ
@given(text=st.one_of(tables(), json_lines()), data=st.data())
def test_damaged_bz2(fuzz_dir, text, data):
    packed = bytearray(bz2.compress(text.encode("utf-8", errors="replace")))
    damage = data.draw(st.sampled_from(["cut", "flip", "junk", "twice"]))
    if damage == "cut":
        packed = packed[: data.draw(st.integers(0, max(0, len(packed) - 1)))]
    elif damage == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(packed) - 1))
            packed[i] ^= data.draw(st.integers(1, 255))
    elif damage == "junk":
        packed += data.draw(st.binary(min_size=1, max_size=40))
    else:  # two streams back to back: valid, read as one file
        packed += bz2.compress(b"")
    suffix = ".csv.bz2" if "{" not in text[:1] else ".jsonl.bz2"
    exercise(write(fuzz_dir, suffix, bytes(packed)))


@FUZZ
@given(
    columns=st.lists(st.sampled_from(["text", "label", "note"]) | cell, min_size=1, max_size=4),
    kinds=st.lists(st.sampled_from(["str", "int", "float", "list", "null", "mixed"]), min_size=4, max_size=4),
    n=st.integers(0, 30),
    data=st.data(),
)
def test_random_parquet_tables(fuzz_dir, columns, kinds, n, data):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def column(kind):
        if kind == "str":
            return pa.array(data.draw(st.lists(plain | label, min_size=n, max_size=n)), pa.string())
        if kind == "int":
            return pa.array(data.draw(st.lists(st.integers(-5, 5), min_size=n, max_size=n)), pa.int64())
        if kind == "float":
            return pa.array(data.draw(st.lists(st.floats(), min_size=n, max_size=n)), pa.float64())
        if kind == "list":
            return pa.array(data.draw(st.lists(st.lists(plain, max_size=2), min_size=n, max_size=n)))
        if kind == "null":
            return pa.nulls(n, pa.string())
        return pa.array(data.draw(st.lists(st.none() | plain | label, min_size=n, max_size=n)), pa.string())

    table = pa.Table.from_arrays([column(k) for k in kinds[: len(columns)]], columns)
    path = fuzz_dir / f"f{next(_names)}.parquet"
    pq.write_table(table, path)
    exercise(path, data.draw(st.sampled_from([0.0, 0.5])))
