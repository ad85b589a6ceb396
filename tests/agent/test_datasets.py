import json
from collections import Counter

import pytest

from activesynth.agent.config import DataConfig
from activesynth.agent.datasets import (
    BUILTINS,
    DataError,
    SealedSplitError,
    Split,
    load,
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
    ds = load(DataConfig(dataset=name, pii_scrub=False))
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
