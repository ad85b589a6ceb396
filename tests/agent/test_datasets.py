import bz2
import json
from collections import Counter
from pathlib import Path

import pytest

from activesynth.agent.config import DataConfig
from activesynth.agent.datasets import (
    BUILTINS,
    DataError,
    SealedSplitError,
    Split,
    load,
    read_table,
    sample_shots,
    stratified_split,
)
from tests.conftest import SMALL_LABELS, write_csv


@pytest.mark.parametrize(
    ("name", "sizes", "n_classes"),
    [
        ("banking77", {"train": 9003, "dev": 1000, "test": 3080}, 77),
        ("hwu64", {"train": 7712, "dev": 933, "test": 1032}, 64),
        ("clinc150", {"train": 18000, "dev": 2250, "test": 2250}, 150),
    ],
)
def test_builtin_sizes(name, sizes, n_classes):
    ds = load(DataConfig(dataset=name, pii_scrub=False, selection_fraction=0))
    assert ds.sizes() == sizes
    assert len(ds.labels) == n_classes


def test_rotten_tomatoes_fixed_stratified_split():
    a = load(DataConfig(dataset="rotten_tomatoes", seed=0))
    b = load(DataConfig(dataset="rotten_tomatoes", seed=7))
    assert a.labels == ["fresh", "rotten"]
    assert a.train.texts == b.train.texts  # the split does not move with the run seed
    total = sum(a.sizes().values())
    assert 12000 < total <= 12808
    share = Counter(a.dev.labels)["fresh"] / len(a.dev)
    assert abs(share - Counter(a.train.labels)["fresh"] / len(a.train)) < 0.01
    assert not set(a.train.texts) & set(a.test.reveal("evaluation")[0])


def test_shots_are_seeded_and_per_class():
    a = load(DataConfig(dataset="banking77", shots=10, seed=1))
    b = load(DataConfig(dataset="banking77", shots=10, seed=1))
    c = load(DataConfig(dataset="banking77", shots=10, seed=2))
    assert set(Counter(a.train.labels).values()) == {10}
    assert a.train.texts == b.train.texts and a.train.texts != c.train.texts


def test_test_split_is_sealed():
    ds = load(DataConfig(dataset="hwu64"))
    assert not hasattr(ds.test, "texts")
    with pytest.raises(SealedSplitError):
        ds.test.reveal("prompt")
    texts, labels = ds.test.reveal("evaluation")
    assert len(texts) == len(labels) == 1032
    assert "texts" not in repr(ds.test)
    with pytest.raises(ValueError):
        Split("test", ["x"], ["y"])


def test_pool_from_unused_train_has_no_labels():
    ds = load(DataConfig(dataset="banking77", shots=5, pool_from_unused_train=True))
    assert ds.pool is not None and ds.pool.labels is None
    assert len(ds.pool) == 9003 - 5 * 77
    assert not set(ds.pool.texts) & set(ds.train.texts)


def test_user_files_all_formats(tmp_path, small_files):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset as HFDataset

    base = load(DataConfig(**small_files))
    assert base.labels == sorted(SMALL_LABELS)
    mapped = {}
    for split in ("train", "dev", "test"):
        src = load(DataConfig(**small_files, pii_scrub=False))
        texts, labels = (
            src.test.reveal("evaluation")
            if split == "test"
            else (getattr(src, split).texts, getattr(src, split).labels)
        )
        rows = [{"t": t, "y": y} for t, y in zip(texts, labels, strict=True)]
        mapped[split] = rows
    paths = {}
    for split, rows in mapped.items():
        jl = tmp_path / f"{split}.jsonl"
        jl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / f"{split}.parquet")
        HFDataset.from_list(rows).save_to_disk(str(tmp_path / f"{split}_hf"))
        write_csv(tmp_path / f"{split}.tsv", rows, fields=("t", "y"), delimiter="\t")
        paths[split] = {
            "jsonl": jl,
            "parquet": tmp_path / f"{split}.parquet",
            "hf": tmp_path / f"{split}_hf",
            "tsv": tmp_path / f"{split}.tsv",
        }
    for fmt in ("jsonl", "parquet", "hf", "tsv"):
        ds = load(DataConfig(**{s: paths[s][fmt] for s in paths}, text_column="t", label_column="y"))
        assert ds.train.texts == base.train.texts, fmt
        assert ds.train.labels == base.train.labels, fmt
        assert ds.test.reveal("evaluation") == base.test.reveal("evaluation"), fmt


def test_single_file_split_by_us(tmp_path, small_files):
    import csv

    rows = []
    for split in ("train", "dev", "test"):
        with open(small_files[split], encoding="utf-8") as f:
            rows += list(csv.DictReader(f))
    f = write_csv(tmp_path / "all.csv", rows)
    a = load(DataConfig(data=f, seed=3))
    b = load(DataConfig(data=f, seed=3))
    assert a.train.texts == b.train.texts
    assert sum(a.sizes().values()) == len(rows)
    assert set(Counter(a.dev.labels)) == set(SMALL_LABELS)


def _cfg(small_files, **over):
    files = dict(small_files)
    files.update(over)
    return DataConfig(**files)


def _write(tmp_path, name, content: bytes):
    p = tmp_path / name
    p.write_bytes(content)
    return p


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "empty.csv: empty file"),
        ("nolabel.csv", b"text,category\nhello,a\n", "missing column 'label' (columns: text, category)"),
        ("blank.csv", b"text,label\nhello,a\n   ,b\n", "blank.csv: line 3: empty text"),
        ("nolab.csv", b"text,label\nhello,a\nworld,\n", "nolab.csv: line 3: missing label"),
        ("bytes.csv", b"text,label\nhello,a\nbad \xff byte,b\n", "bytes.csv: line 3: undecodable bytes"),
        ("one.csv", b"text,label\nhello,a\nworld,a\n", "only one class ('a')"),
        ("bad.jsonl", b'{"text": "a", "label": "x"}\n{"text": oops}\n', "bad.jsonl: line 2: malformed JSON"),
        (
            "num.jsonl",
            b'{"text": "a", "label": "x"}\n{"text": 5, "label": "y"}\n',
            "line 2: text is not a string",
        ),
        ("x.xlsx", b"junk", "unknown format '.xlsx'"),
    ],
)
def test_bad_train_file_messages(tmp_path, small_files, name, content, message):
    bad = _write(tmp_path, name, content)
    with pytest.raises(DataError) as e:
        load(_cfg(small_files, train=bad))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_label_only_in_dev(tmp_path, small_files):
    dev = _write(tmp_path, "dev.csv", small_files["dev"].read_bytes() + b"a new question,brand_new_label\n")
    with pytest.raises(
        DataError, match=r"dev.csv: line \d+: label 'brand_new_label' does not occur in the training"
    ):
        load(_cfg(small_files, dev=dev))


def test_duplicates_across_train_and_test_warn(tmp_path, small_files, caplog):
    test_text = small_files["test"].read_text().splitlines()[1]
    train = _write(tmp_path, "train.csv", small_files["train"].read_bytes() + (test_text + "\n").encode())
    ds = load(_cfg(small_files, train=train))
    assert any("also occur in the test split" in w for w in ds.warnings)
    assert "also occur in the test split" in caplog.text


def test_pii_scrubbed_and_counted(tmp_path, small_files):
    extra = b"my email is jane@example.org and card 4111 1111 1111 1111,top_up_failed\n"
    train = _write(tmp_path, "train.csv", small_files["train"].read_bytes() + extra)
    ds = load(_cfg(small_files, train=train))
    assert any("[EMAIL]" in t and "[CARD]" in t for t in ds.train.texts)
    assert not any("jane@example.org" in t for t in ds.train.texts)
    assert ds.pii["replaced"] == {"EMAIL": 1, "CARD": 1}
    off = load(_cfg(small_files, train=train, pii_scrub=False))
    assert any("jane@example.org" in t for t in off.train.texts)


def test_config_rejects_mixed_sources(small_files):
    with pytest.raises(ValueError, match="either a built-in dataset or files"):
        DataConfig(dataset="banking77", train=small_files["train"])
    with pytest.raises(ValueError, match="missing: --dev, --test"):
        DataConfig(train=small_files["train"])
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        DataConfig(dataset="banking77", shotz=3)


def test_unknown_builtin():
    with pytest.raises(DataError, match="unknown dataset 'nope'; built-in: "):
        load(DataConfig(dataset="nope"))
    assert set(BUILTINS) == {"banking77", "hwu64", "clinc150", "rotten_tomatoes"}


def test_split_helpers_are_stratified():
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    dev, test, train = stratified_split(labels, [0.1, 0.2], seed=0)
    assert len(dev) + len(test) + len(train) == 100
    assert not set(dev) & set(test) and not set(test) & set(train)
    assert Counter(labels[i] for i in test) == {"a": 10, "b": 6, "c": 4}
    shots = sample_shots(labels, 7, seed=0)
    assert Counter(labels[i] for i in shots) == {"a": 7, "b": 7, "c": 7}


# -- issue 11 item 5: bad input is one clear line ----------------------------------------------------------


def _one_line(msg: str) -> None:
    """A message is one line, with no raw control character (escape sequences would reach the terminal)."""
    assert "\n" not in msg and "\r" not in msg
    assert all(c.isprintable() for c in msg), repr(msg)


def _small_csv_bytes(small_files) -> bytes:
    return small_files["train"].read_bytes()


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("junk.csv.bz2", lambda good: b"BZh91AY&SY" + b"\x00garbage" * 20, "not a valid .bz2 file"),
        ("notbz.csv.bz2", lambda good: b"plain text, not compressed\n", "not a valid .bz2 file"),
        ("cut.csv.bz2", lambda good: bz2.compress(good)[:-40], "truncated .bz2 file"),
        ("tail.csv.bz2", lambda good: bz2.compress(good) + b"trailing junk", "not a valid .bz2 file"),
        ("cut.jsonl.bz2", lambda good: bz2.compress(b'{"text": "a", "label": "x"}\n')[:30], "truncated .bz2"),
        ("inner.bz2", lambda good: bz2.compress(good), "unknown format inside '.bz2'"),
        ("bad.parquet", lambda good: b"PAR1" + b"\x00" * 50 + b"PAR1", "not a readable Parquet file"),
    ],
)
def test_corrupt_compressed_and_container_files(tmp_path, small_files, name, make, message):
    bad = _write(tmp_path, name, make(_small_csv_bytes(small_files)))
    with pytest.raises(DataError) as e:
        load(_cfg(small_files, train=bad))
    assert message in str(e.value)
    assert name in str(e.value)
    _one_line(str(e.value))


def test_good_bz2_still_reads(tmp_path, small_files):
    good = _write(tmp_path, "train.csv.bz2", bz2.compress(_small_csv_bytes(small_files)))
    assert load(_cfg(small_files, train=good)).train.texts == load(DataConfig(**small_files)).train.texts


def test_corrupt_dataset_folder_is_one_line(tmp_path, small_files):
    folder = tmp_path / "train_hf"
    folder.mkdir()
    (folder / "dataset_info.json").write_text("{not json\n\x1b[31m")
    (folder / "state.json").write_text('{"_data_files": [{"filename": "nope.arrow"}]}')
    with pytest.raises(DataError) as e:
        load(_cfg(small_files, train=folder))
    assert "train_hf: not a Hugging Face dataset folder" in str(e.value)
    _one_line(str(e.value))


def _rows_csv(tmp_path, name, per_class: dict[str, int]) -> Path:
    rows = [{"text": f"{lab} text {i}", "label": lab} for lab, n in per_class.items() for i in range(n)]
    return write_csv(tmp_path / name, rows)


def test_tiny_data_file_is_refused(tmp_path):
    f = _rows_csv(tmp_path, "tiny.csv", {"a": 2, "b": 1})  # 3 rows: dev and test would be empty
    with pytest.raises(DataError) as e:
        load(DataConfig(data=f))
    msg = str(e.value)
    assert "tiny.csv: class 'b' has 1 row(s), too few to split (it would get train 1, dev 0, test 0)" in msg
    assert "1 more class(es) are too small too" in msg
    assert "needs at least 3 rows per class" in msg
    _one_line(msg)
    ok = _rows_csv(tmp_path, "ok.csv", {"a": 3, "b": 3})
    ds = load(DataConfig(data=ok, selection_fraction=0))
    assert ds.sizes() == {"train": 2, "dev": 2, "test": 2}


def test_data_split_that_leaves_train_without_a_class_is_refused(tmp_path):
    # 45 % dev and 45 % test of 4 rows leave no training row for the class
    f = _rows_csv(tmp_path, "all.csv", {"a": 4, "b": 30})
    with pytest.raises(DataError) as e:
        load(DataConfig(data=f, dev_fraction=0.45, test_fraction=0.45))
    assert "all.csv: class 'a' has 4 row(s)" in str(e.value)
    assert "train 0" in str(e.value)


def test_shots_beyond_a_class_size_are_refused(small_files):
    # small_files has 6 training texts per class
    assert set(Counter(load(_cfg(small_files, shots=6)).train.labels).values()) == {6}
    with pytest.raises(DataError) as e:
        load(_cfg(small_files, shots=7))
    msg = str(e.value)
    assert "train.csv: --shots 7: 8 class(es) have fewer than 7 training texts" in msg
    assert "with 6); use at most 6 shots" in msg
    _one_line(msg)


def test_selection_split_that_would_be_empty_is_refused(tmp_path, small_files):
    one_per_class = [{"text": f"q {lab}", "label": lab} for lab in SMALL_LABELS]
    dev = write_csv(tmp_path / "dev.csv", one_per_class)
    with pytest.raises(DataError) as e:
        load(_cfg(small_files, dev=dev, selection_fraction=0.5))
    msg = str(e.value)
    assert "dev.csv: the selection split (selection_fraction 0.5) would be empty" in msg
    assert "at least 2 dev texts" in msg
    _one_line(msg)
    ds = load(_cfg(small_files, selection_fraction=0.5))  # 8 per class: both halves hold every class
    assert set(ds.select.labels) == set(ds.dev.labels) == set(SMALL_LABELS)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "esc.csv",
            b"\x1b[2J\x1b]0;pwned\x07,label\nhello,a\n",
            r"(columns: \x1b[2J\x1b]0;pwned\x07, label)",
        ),
        ("bidi.csv", "te\u202ext,label\nhi,a\n".encode(), r"columns: te\u202ext, label"),
        ("esc.jsonl", b'{"t\\u001bxt": "a", "label": "x"}\n', r"columns: t\x1bxt, label"),
        ("one.csv", b"text,label\nhello,\x1b[31mred\nworld,\x1b[31mred\n", r"only one class ('\x1b[31mred')"),
        ("cr.csv", b'text,label\nhello,"a\rb"\nworld,"a\rb"\n', r"only one class ('a\rb')"),
    ],
)
def test_control_characters_from_files_are_escaped(tmp_path, small_files, name, content, message):
    bad = _write(tmp_path, name, content)
    with pytest.raises(DataError) as e:
        load(_cfg(small_files, train=bad))
    assert message in str(e.value)
    _one_line(str(e.value))


def test_control_characters_in_dev_labels_and_long_values_are_capped(tmp_path, small_files):
    label = "\x1b[31m" + "x" * 500
    dev = _write(tmp_path, "dev.csv", small_files["dev"].read_bytes() + f"a question,{label}\n".encode())
    with pytest.raises(DataError) as e:
        load(_cfg(small_files, dev=dev))
    msg = str(e.value)
    assert r"label '\x1b[31mxxx" in msg and "…' does not occur in the training data" in msg
    assert len(msg) < 300
    _one_line(msg)
    head = _write(tmp_path, "wide.csv", (",".join(f"col{i}" * 20 for i in range(200)) + "\nx\n").encode())
    with pytest.raises(DataError) as e:
        load(_cfg(small_files, train=head))
    assert "missing column 'text'" in str(e.value) and "(190 more)" in str(e.value)
    assert len(str(e.value)) < 1200


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'text,label\n"hello,a\nworld,b\nagain,c\n', "line 2: unterminated quoted field"),
        (b'text,label\nhello,a\nworld,"b\nagain,c\n', "line 3: unterminated quoted field"),
        (b'text,label\nhello,a\nworld,b\n"again,c', "line 4: unterminated quoted field"),
        (b'"text,label\nhello,a\n', "line 1: unterminated quoted field"),
        (b'text,label\n"say ""hi"",a\nfine,b\n"x,"y\nz,b\n', "line 4: unterminated quoted field"),
    ],
)
def test_unterminated_quote_is_named(tmp_path, small_files, content, message):
    bad = _write(tmp_path, "quote.csv", content)
    with pytest.raises(DataError) as e:
        load(_cfg(small_files, train=bad))
    assert f"quote.csv: {message}" in str(e.value)
    assert "runs to the end of the file" in str(e.value)
    _one_line(str(e.value))


def test_quotes_that_close_still_read(tmp_path, small_files):
    good = b'text,label\n"say ""hi"", then go",a\nhe said "no",b\n"two\nlines",a\n'
    rows = read_table(_write(tmp_path, "q.csv", good))
    assert rows.texts == ['say "hi", then go', 'he said "no"', "two\nlines"]
    assert rows.rows == [2, 3, 5]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("nul.csv", b"text,label\nhello,a\nwor\x00ld,b\n", "nul.csv: line 3: NUL byte"),
        ("nul.tsv", b"text\tlabel\nhello\ta\x00\n", "nul.tsv: line 2: NUL byte"),
        ("nulhead.csv", b"te\x00xt,label\nhello,a\n", "nulhead.csv: line 1: NUL byte"),
        ("nul.jsonl", b'{"text": "a", "label": "x"}\n{"text": "b\\u0000", "label": "y"}\n', "line 2: NUL"),
        ("utf16.csv", "text,label\nhello,a\n".encode("utf-16-le"), "line 1: NUL byte"),
        ("bom16.csv", "text,label\nhello,a\n".encode("utf-16"), "UTF-16"),
    ],
)
def test_nul_bytes_are_refused(tmp_path, small_files, name, content, message):
    bad = _write(tmp_path, name, content)
    with pytest.raises(DataError) as e:
        load(_cfg(small_files, train=bad))
    assert message in str(e.value)
    _one_line(str(e.value))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("dup.csv", b"text,label,text\nhello,a,other\nworld,b,more\n", "column 'text' appears 2 times"),
        ("dupl.tsv", b"label\ttext\tlabel\nhello\ta\tb\n", "column 'label' appears 2 times"),
        ("dup.jsonl", b'{"text": "a", "label": "x", "text": "b"}\n', "line 1: key 'text' appears 2 times"),
    ],
)
def test_duplicate_text_or_label_column_is_refused(tmp_path, small_files, name, content, message):
    bad = _write(tmp_path, name, content)
    with pytest.raises(DataError) as e:
        load(_cfg(small_files, train=bad))
    assert f"{name}: {message}" in str(e.value)
    _one_line(str(e.value))


def test_duplicate_parquet_column_is_refused(tmp_path, small_files):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_arrays(
        [pa.array(["a", "b"]), pa.array(["x", "y"]), pa.array(["c", "d"])], ["text", "label", "text"]
    )
    pq.write_table(table, tmp_path / "dup.parquet")
    with pytest.raises(DataError, match=r"dup.parquet: column 'text' appears 2 times"):
        load(_cfg(small_files, train=tmp_path / "dup.parquet"))


def test_other_duplicate_columns_are_fine(tmp_path):
    rows = read_table(_write(tmp_path, "extra.csv", b"note,text,label,note\nn1,hello,a,n2\n"))
    assert rows.texts == ["hello"] and rows.labels == ["a"]


def test_load_builtin_is_public():
    import activesynth.agent.datasets as datasets

    assert not hasattr(datasets, "_load_builtin")
    train, dev, test = datasets.load_builtin("hwu64")
    assert (len(train.texts), len(dev.texts), len(test.texts)) == (7712, 933, 1032)
    with pytest.raises(DataError, match="unknown dataset"):
        datasets.load_builtin("nope")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"text": "a\\ud800", "label": "x"}\n', "line 1: the text holds an unpaired UTF-16 surrogate"),
        (b'{"text": "a", "label": "\\udfff"}\n', "line 1: the label holds an unpaired UTF-16 surrogate"),
        (
            b'{"text": "a", "label": "x"}\n{"text": 1' + b"0" * 5000 + b', "label": "y"}\n',
            "line 2: unreadable",
        ),
        (b'{"text": "a", "label": "x"}\n' + b"[" * 100_000 + b"\n", "line 2: malformed JSON"),
    ],
)
def test_other_bad_json_lines(tmp_path, small_files, content, message):
    bad = _write(tmp_path, "bad.jsonl", content)
    with pytest.raises(DataError) as e:
        load(_cfg(small_files, train=bad))
    assert f"bad.jsonl: {message}" in str(e.value)
    _one_line(str(e.value))


def test_json_lines_split_on_newline_only(tmp_path):
    # U+2028 and U+0085 are legal inside a JSON string; str.splitlines() would cut the record there
    good = '{"text": "a\u2028b\x85c", "label": "x"}\r\n{"text": "d", "label": "y"}\n'.encode()
    rows = read_table(_write(tmp_path, "ok.jsonl", good))
    assert rows.texts == ["a\u2028b\x85c", "d"] and rows.rows == [1, 2]


def test_comma_separated_txt_gets_a_hint(tmp_path, small_files):
    bad = _write(tmp_path, "all.txt", b"text,label\nhello,a\nworld,b\n")
    with pytest.raises(DataError) as e:
        load(_cfg(small_files, train=bad))
    msg = str(e.value)
    assert "all.txt: missing column 'text': read as tab-separated" in msg
    assert "the header is one column 'text,label'; if the file is comma-separated, name it .csv" in msg
    _one_line(msg)
