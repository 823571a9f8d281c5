"""Dataset readers, registration and loading: every bad dataset gives its own one-line error
and leaves the catalog untouched; every format round-trips through the catalog unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from relman.app.datasets import get_dataset, list_datasets, load_dataset, register_dataset
from relman.data.dataset import Dataset
from relman.data.labels import align_labels, check_labels
from relman.data.mapping import ColumnMapping
from relman.data.readers import read_path
from relman.errors import DatasetError, NotFound


# -- helpers --------------------------------------------------------------------------------
def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, rows: list[dict]) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


def parquet(path: Path, columns: dict) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


def png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    a = array if array.ndim == 2 or array.shape[-1] != 1 else array[:, :, 0]
    Image.fromarray(a).save(path)
    return path


def assert_untouched(catalog) -> None:
    """A refused dataset leaves no row, no file row, no blob and no pending record."""
    assert catalog.query("SELECT * FROM datasets") == []
    assert catalog.query("SELECT * FROM dataset_files") == []
    assert catalog.query("SELECT * FROM pending_blobs") == []
    assert catalog.orphan_blobs() == []
    assert list(catalog.store.all_shas()) == []
    assert not [e for e in catalog.events() if e["kind"] == "dataset-registered"]


def refused(catalog, path: Path, match: str, **kw) -> str:
    with pytest.raises(DatasetError, match=match) as info:
        register_dataset(catalog, path, "bad", **kw)
    message = str(info.value)
    assert "\n" not in message
    assert_untouched(catalog)
    return message


GOOD_CSV = "text,label,group\nthe movie was good,positive,a\nthe film was bad,negative,b\na fun plot,positive,b\n"


# -- bad datasets ---------------------------------------------------------------------------
def test_missing_column_names_available_ones(catalog, tmp_path):
    p = write(tmp_path / "d.csv", GOOD_CSV)
    msg = refused(catalog, p, r"no label column 'sentiment'", label_col="sentiment")
    assert "columns: text, label, group" in msg and "d.csv" in msg
    refused(catalog, p, r"no text column 'body' \(columns: text, label, group\)", text_col="body")
    refused(catalog, p, r"no group column 'region'", group_col="region")
    j = jsonl(tmp_path / "d.jsonl", [{"text": "good", "label": "positive"}])
    refused(catalog, j, r"d.jsonl: no label column 'y' \(columns: text, label\)", label_col="y")
    q = parquet(tmp_path / "d.parquet", {"text": ["good"], "label": ["positive"]})
    refused(catalog, q, r"d.parquet: no text column 'sentence' \(columns: text, label\)", text_col="sentence")


def test_jsonl_row_missing_a_key_names_the_line(catalog, tmp_path):
    p = jsonl(tmp_path / "d.jsonl", [{"text": "good", "label": "positive"}, {"text": "bad"}])
    refused(catalog, p, r"d.jsonl row 2 \(line 2\): no key 'label' \(keys: text\)")


def test_empty_label_cells_are_refused(catalog, tmp_path):
    p = write(tmp_path / "d.csv", "text,label\nthe movie was good,positive\nthe film,\n")
    refused(catalog, p, r"d.csv row 2 \(line 3\): label column 'label' is empty")
    j = jsonl(tmp_path / "d.jsonl", [{"text": "good", "label": "positive"}, {"text": "bad", "label": None}])
    refused(catalog, j, r"d.jsonl row 2 \(line 2\): label column 'label' is empty")
    q = parquet(tmp_path / "d.parquet", {"text": ["good", "bad", "fun"], "label": [1.0, float("nan"), 0.0]})
    refused(catalog, q, r"d.parquet row 2: label column 'label' is NaN")
    q2 = parquet(tmp_path / "n.parquet", {"text": ["good", "bad"], "label": ["positive", None]})
    refused(catalog, q2, r"n.parquet row 2: label column 'label' is empty")


def test_text_column_that_is_not_strings_is_refused(catalog, tmp_path):
    j = jsonl(tmp_path / "d.jsonl", [{"text": "good", "label": "p"}, {"text": 42, "label": "n"}])
    refused(catalog, j, r"d.jsonl row 2 \(line 2\): text column 'text' is a int \(42\), not a string")
    q = parquet(tmp_path / "d.parquet", {"text": [1, 2], "label": ["a", "b"]})
    refused(catalog, q, r"d.parquet: text column 'text' has type int64, not string")
    c = write(tmp_path / "d.csv", "text,label\ngood,p\n   ,n\n")
    refused(catalog, c, r"d.csv row 2 \(line 3\): text column 'text' is empty")


def test_empty_files_are_refused(catalog, tmp_path):
    refused(catalog, write(tmp_path / "zero.csv", b""), r"zero.csv: file is empty")
    refused(catalog, write(tmp_path / "header.csv", "text,label\n"), r"header.csv: no data rows")
    refused(catalog, write(tmp_path / "e.jsonl", "\n\n"), r"e.jsonl: file is empty")
    refused(catalog, write(tmp_path / "e.txt", ""), r"e.txt: file is empty")
    refused(catalog, write(tmp_path / "e.parquet", b""), r"e.parquet: file is empty")
    refused(catalog, write(tmp_path / "e.npz", b""), r"e.npz: file is empty", x_key="x")
    q = parquet(tmp_path / "rows0.parquet", {"text": np.array([], dtype=str).tolist(), "label": []})
    refused(catalog, q, r"rows0.parquet: no data rows")
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    refused(catalog, tmp_path / "imgs", r"no images")


def test_non_utf8_names_line_and_byte_offset(catalog, tmp_path):
    data = "text,label\nthe movie was good,positive\n".encode() + b"caf\xe9 bad,negative\n"
    msg = refused(catalog, write(tmp_path / "latin1.csv", data), r"latin1.csv: line 3 is not UTF-8")
    offset = data.index(b"\xe9")
    assert f"byte offset {offset})" in msg and "0xe9" in msg
    j = write(tmp_path / "d.jsonl", b'{"text": "ok", "label": "p"}\n{"text": "\xff", "label": "n"}\n')
    refused(catalog, j, r"d.jsonl: line 2 is not UTF-8 text \(byte 0xff at byte offset 39\)")
    t = write(tmp_path / "lm.txt", b"hello\nworld\n\x80oops\n")
    refused(catalog, t, r"lm.txt: line 3 is not UTF-8 text \(byte 0x80 at byte offset 12\)")


def test_unknown_labels_against_a_given_list(catalog, tmp_path):
    p = write(tmp_path / "d.csv", GOOD_CSV.replace("a fun plot,positive", "a fun plot,neutral"))
    refused(catalog, p, r"d.csv row 3 \(line 4\): label 'neutral' in column 'label' is not one of the given "
                        r"labels \(negative, positive\)", labels=["negative", "positive"])


def test_bad_split_values_are_refused(catalog, tmp_path):
    p = write(tmp_path / "d.csv", "text,label,split\ngood,p,train\nbad,n,dev\n")
    refused(catalog, p, r"d.csv row 2 \(line 3\): split column 'split' holds 'dev'; allowed values are "
                        r"train, validation, test", split_col="split")
    refused(catalog, p, r"either a split column or split fractions", split_col="split", val_fraction=0.2)
    refused(catalog, p, r"leave rows for training", val_fraction=0.5, test_fraction=0.5)
    refused(catalog, p, r"leaves no rows for training", val_fraction=0.4, test_fraction=0.4)


def test_images_that_do_not_decode_name_the_file(catalog, tmp_path):
    root = tmp_path / "imgs"
    png(root / "0" / "a.png", np.zeros((4, 4), np.uint8))
    write(root / "1" / "broken.png", b"\x89PNG\r\n\x1a\nthis is not a png")
    msg = refused(catalog, root, r"1/broken.png: not a decodable image")
    assert str(root) in msg


def test_images_of_different_sizes_are_refused_unless_resized(catalog, tmp_path):
    root = tmp_path / "imgs"
    png(root / "0" / "a.png", np.zeros((4, 4), np.uint8))
    png(root / "1" / "b.png", np.full((6, 5), 200, np.uint8))
    refused(catalog, root, r"imgs/1/b.png: image is 6x5 but \S*imgs/0/a.png is 4x4 \(give an image size")
    register_dataset(catalog, root, "resized", image_size=(4, 4))
    ds = load_dataset(catalog, "resized")
    assert ds.images.shape == (2, 4, 4, 1) and ds.images.dtype == np.uint8
    assert ds.images[1].min() == 200


def test_npz_problems(catalog, tmp_path):
    from relman.data.demo import write_npz

    p = write_npz(tmp_path / "a.npz", {"x": np.zeros((3, 4, 4), np.uint8), "y": np.array([0, 1, 2])})
    refused(catalog, p, r"a.npz: give the key of the image array \(--x-key; keys: x, y\)")
    refused(catalog, p, r"a.npz: no label array 'labels' \(keys: x, y\)", x_key="x", y_key="labels")
    flat = write_npz(tmp_path / "flat.npz", {"x": np.zeros((3, 16), np.uint8)})
    refused(catalog, flat, r"flat.npz: array 'x' has shape \(3, 16\); expected N x H x W", x_key="x")
    wide = write_npz(tmp_path / "wide.npz", {"x": np.full((2, 2, 2), 300, np.int32)})
    refused(catalog, wide, r"integer array 'x' has values 300..300, outside 0..255", x_key="x")
    short = write_npz(tmp_path / "short.npz", {"x": np.zeros((3, 2, 2), np.uint8), "y": np.array([0, 1])})
    refused(catalog, short, r"array 'y' has shape \(2,\), expected \(3,\)", x_key="x", y_key="y")
    np.savez(tmp_path / "obj.npz", x=np.zeros((2, 2, 2), np.uint8), y=np.array([{"a": 1}, None], dtype=object))
    refused(catalog, tmp_path / "obj.npz", r"array 'y' holds Python objects, which are refused", x_key="x",
            y_key="y")
    refused(catalog, write(tmp_path / "junk.npz", b"not a zip"), r"junk.npz: not a readable .npz file", x_key="x")


def test_unknown_format_and_missing_path(catalog, tmp_path):
    refused(catalog, write(tmp_path / "d.xlsx", "x"), r"d.xlsx: cannot tell the format from the suffix '.xlsx'")
    refused(catalog, tmp_path / "nope.csv", r"nope.csv: no such file or folder")
    with pytest.raises(DatasetError, match="unknown dataset format 'xml'"):
        register_dataset(catalog, write(tmp_path / "d.csv", GOOD_CSV), "bad", format="xml")
    assert_untouched(catalog)


def test_duplicate_name_is_refused_and_stores_nothing_new(catalog, tmp_path):
    register_dataset(catalog, write(tmp_path / "d.csv", GOOD_CSV), "reviews")
    before = sorted(catalog.store.all_shas())
    other = write(tmp_path / "e.csv", GOOD_CSV + "very boring,negative,a\n")
    with pytest.raises(DatasetError, match="dataset 'reviews' already exists"):
        register_dataset(catalog, other, "reviews")
    # The same refusal raised inside the write transaction (a race) also leaves no blob behind.
    with pytest.raises(DatasetError, match="dataset 'reviews' already exists"):
        catalog.add_dataset("reviews", {"e.csv": other}, format="csv", kind="text", columns={}, labels=[], n_rows=4)
    assert sorted(catalog.store.all_shas()) == before
    assert catalog.orphan_blobs() == [] and catalog.query("SELECT * FROM pending_blobs") == []
    assert len(list_datasets(catalog)) == 1


# -- round trips ----------------------------------------------------------------------------
def same_rows(a: Dataset, b: Dataset) -> None:
    assert len(a) == len(b)
    assert a.kind == b.kind and a.label_names == b.label_names
    assert a.texts == b.texts
    for x, y in ((a.images, b.images), (a.labels, b.labels), (a.groups, b.groups), (a.split, b.split)):
        assert (x is None) == (y is None)
        if x is not None:
            assert np.array_equal(x, y)


def test_csv_round_trip(catalog, tmp_path):
    p = write(tmp_path / "d.csv", 'text,label,group\n"the movie, was good",positive,a\nthe film was bad,negative,b\n'
                                  'a fun plot,positive,b\n')
    row = register_dataset(catalog, p, "reviews", group_col="group")
    assert row["n_rows"] == 3 and row["labels"] == ["negative", "positive"] and row["kind"] == "text"
    ds = load_dataset(catalog, "reviews")
    assert ds.texts == ["the movie, was good", "the film was bad", "a fun plot"]
    assert ds.labels.tolist() == [1, 0, 1] and ds.groups.tolist() == ["a", "b", "b"]
    assert ds.id == row["id"] and ds.sha256 == row["sha256"] and len(ds.sha256) == 64
    same_rows(ds, read_path(p, ColumnMapping.from_json(row["columns"]), name="reviews"))
    ev = [e for e in catalog.events() if e["kind"] == "dataset-registered"]
    assert ev and ev[-1]["payload"]["dataset"] == "reviews" and catalog.verify_audit() == []


def test_tsv_and_unlabelled_csv(catalog, tmp_path):
    p = write(tmp_path / "d.tsv", "sentence\tlabel\nthe movie was good\t1\nbad, awful\t0\n")
    register_dataset(catalog, p, "tsv", text_col="sentence")
    ds = load_dataset(catalog, "tsv")
    assert ds.texts == ["the movie was good", "bad, awful"] and ds.label_names == ["0", "1"]
    register_dataset(catalog, p, "unlabelled", text_col="sentence", label_col=None)
    u = load_dataset(catalog, "unlabelled")
    assert u.labels is None and not u.has_labels and len(u) == 2


def test_jsonl_round_trip(catalog, tmp_path):
    rows = [{"text": "good", "label": 2, "g": "x"}, {"text": "bad", "label": 10, "g": "y"},
            {"text": "fine", "label": 2, "g": "x", "extra": [1]}]
    p = jsonl(tmp_path / "d.jsonl", rows)
    row = register_dataset(catalog, p, "j", group_col="g")
    assert row["labels"] == ["2", "10"]  # integer labels sort numerically
    ds = load_dataset(catalog, "j")
    assert ds.texts == ["good", "bad", "fine"] and ds.labels.tolist() == [0, 1, 0]
    assert ds.groups.tolist() == ["x", "y", "x"]


def test_parquet_round_trip_with_split_column(catalog, tmp_path):
    p = parquet(tmp_path / "d.parquet", {"text": ["good", "bad", "fun", "awful"], "label": ["p", "n", "p", "n"],
                                         "split": ["train", "train", "validation", "test"]})
    register_dataset(catalog, p, "pq", split_col="split", labels=["n", "p"])
    ds = load_dataset(catalog, "pq")
    assert ds.labels.tolist() == [1, 0, 1, 0] and ds.split.tolist() == ["train", "train", "validation", "test"]
    assert load_dataset(catalog, "pq", "validation").texts == ["fun"]
    assert load_dataset(catalog, "pq", "train").texts == ["good", "bad"]


def test_image_folder_round_trip_grey_and_rgb(catalog, tmp_path):
    rng = np.random.default_rng(0)
    grey = tmp_path / "grey"
    arrays = {("cat", "1.png"): rng.integers(0, 256, (5, 6), dtype=np.uint8),
              ("cat", "2.png"): rng.integers(0, 256, (5, 6), dtype=np.uint8),
              ("dog", "3.png"): rng.integers(0, 256, (5, 6), dtype=np.uint8)}
    for (cls, f), a in arrays.items():
        png(grey / cls / f, a)
    write(grey / "dog" / ".DS_Store", b"junk")  # hidden files are skipped
    row = register_dataset(catalog, grey, "grey")
    assert row["format"] == "images" and row["labels"] == ["cat", "dog"]
    assert sorted(f["path"] for f in row["files"]) == ["cat/1.png", "cat/2.png", "dog/3.png"]
    ds = load_dataset(catalog, "grey")
    assert ds.images.shape == (3, 5, 6, 1) and ds.images.dtype == np.uint8
    assert np.array_equal(ds.images[:, :, :, 0], np.stack(list(arrays.values())))
    assert ds.labels.tolist() == [0, 0, 1]

    rgb = tmp_path / "rgb"
    colour = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    png(rgb / "a" / "x.png", colour)
    png(rgb / "b" / "y.png", np.full((4, 4), 7, np.uint8))  # grey joins as RGB
    register_dataset(catalog, rgb, "rgb")
    c = load_dataset(catalog, "rgb")
    assert c.images.shape == (2, 4, 4, 3)
    assert np.array_equal(c.images[0], colour) and (c.images[1] == 7).all()


def test_npz_round_trip_with_groups_and_float_images(catalog, tmp_path):
    from relman.data.demo import write_npz

    x = np.linspace(0, 1, 4 * 3 * 3).reshape(4, 3, 3).astype(np.float32)
    p = write_npz(tmp_path / "f.npz", {"x": x, "y": np.array(["b", "a", "b", "a"]),
                                       "g": np.array(["u", "v", "u", "v"])})
    register_dataset(catalog, p, "f", x_key="x", y_key="y", group_col="g")
    ds = load_dataset(catalog, "f")
    assert ds.images.shape == (4, 3, 3, 1) and ds.images.dtype == np.uint8
    assert ds.images.max() == 255 and ds.images.min() == 0
    assert ds.label_names == ["a", "b"] and ds.labels.tolist() == [1, 0, 1, 0]
    assert ds.groups.tolist() == ["u", "v", "u", "v"]


def test_text_lines_and_chunks(catalog, tmp_path):
    p = write(tmp_path / "lm.txt", "the movie was good.\n\n  \nthe plot was boring.\n")
    row = register_dataset(catalog, p, "lines")
    assert row["kind"] == "lm" and row["labels"] == []
    assert load_dataset(catalog, "lines").texts == ["the movie was good.", "the plot was boring."]
    register_dataset(catalog, p, "chunks", chunk_chars=8)
    chunks = load_dataset(catalog, "chunks").texts
    assert chunks[0] == "the movi" and all(len(c) <= 8 for c in chunks)
    assert "".join(chunks).replace("\n", "").replace(" ", "") == \
        p.read_text().replace("\n", "").replace(" ", "")


# -- splits ---------------------------------------------------------------------------------
def test_seeded_split_is_stored_and_reproducible(catalog, tmp_path):
    from relman.data.demo import sentiment_csv
    from relman.data.splits import seeded_split

    p = sentiment_csv(tmp_path / "s.csv", n=100, seed=3)
    row = register_dataset(catalog, p, "s1", val_fraction=0.2, test_fraction=0.1, seed=7)
    assert row["columns"]["seed"] == 7 and row["meta"]["split_counts"] == {"train": 70, "validation": 20, "test": 10}
    a = load_dataset(catalog, "s1")
    b = load_dataset(catalog, "s1")
    assert np.array_equal(a.split, b.split)
    assert np.array_equal(a.split, seeded_split(100, 0.2, 0.1, 7))
    register_dataset(catalog, p, "s2", val_fraction=0.2, test_fraction=0.1, seed=7)
    assert np.array_equal(load_dataset(catalog, "s2").split, a.split)
    register_dataset(catalog, p, "s3", val_fraction=0.2, test_fraction=0.1, seed=8)
    assert not np.array_equal(load_dataset(catalog, "s3").split, a.split)
    test = load_dataset(catalog, "s1", "test")
    assert len(test) == 10 and set(test.split) == {"test"}
    assert test.texts == [t for t, s in zip(a.texts, a.split) if s == "test"]
    with pytest.raises(DatasetError, match="unknown split 'dev'"):
        load_dataset(catalog, "s1", "dev")
    # a dataset without splits stands for every split
    register_dataset(catalog, p, "whole")
    assert len(load_dataset(catalog, "whole", "test")) == 100


# -- labels against a model -----------------------------------------------------------------
def test_check_labels_and_align(catalog, tmp_path):
    p = write(tmp_path / "d.csv", GOOD_CSV)
    register_dataset(catalog, p, "reviews")
    ds = load_dataset(catalog, "reviews")  # label_names negative, positive
    mapping = check_labels(ds, ["positive", "negative", "neutral"])
    assert mapping.tolist() == [1, 0]
    aligned = align_labels(ds, ["positive", "negative", "neutral"])
    assert [aligned.label_names[i] for i in aligned.labels] == [ds.label_names[i] for i in ds.labels]
    with pytest.raises(DatasetError, match=r"dataset 'reviews' has labels the model does not know: positive "
                                           r"\(model labels: negative, neutral\)"):
        check_labels(ds, ["negative", "neutral"])
    # labels that no row uses do not matter
    assert check_labels(ds.take([1]), ["negative"]).tolist() == [0, -1]


def test_check_labels_against_a_real_model_config(catalog, tiny_vit):
    from relman.data import demo

    cfg = json.loads((tiny_vit / "config.json").read_text())
    model_labels = [cfg["id2label"][k] for k in sorted(cfg["id2label"], key=int)]
    ds = demo.digits(n=50)
    assert check_labels(ds, model_labels).tolist() == list(range(10))
    with pytest.raises(DatasetError, match="labels the model does not know: 9"):
        check_labels(ds, model_labels[:9])


# -- lookup ---------------------------------------------------------------------------------
def test_unknown_dataset_lists_known_ones(catalog, tmp_path):
    register_dataset(catalog, write(tmp_path / "d.csv", GOOD_CSV), "reviews")
    with pytest.raises(NotFound, match=r"unknown dataset 'nope' \(datasets in this catalog: reviews\)"):
        load_dataset(catalog, "nope")
    assert get_dataset(catalog, get_dataset(catalog, "reviews")["id"])["name"] == "reviews"


def test_missing_blob_is_an_integrity_error(catalog, tmp_path):
    from relman.errors import IntegrityError

    row = register_dataset(catalog, write(tmp_path / "d.csv", GOOD_CSV), "reviews")
    import os
    import stat

    blob = catalog.store.path(row["files"][0]["sha256"])
    os.chmod(blob, stat.S_IRUSR | stat.S_IWUSR)
    blob.write_text(GOOD_CSV.replace("good", "gold"), encoding="utf-8")
    with pytest.raises(IntegrityError, match=r"dataset 'reviews': the blob of d.csv \(.*\): content changed"):
        load_dataset(catalog, "reviews", verify=True)
    catalog.store.remove(row["files"][0]["sha256"])
    with pytest.raises(IntegrityError, match="dataset 'reviews': the blob of d.csv .*: missing"):
        load_dataset(catalog, "reviews")


def test_unknown_labels_in_images_and_npz(catalog, tmp_path):
    from relman.data.demo import write_npz

    root = tmp_path / "imgs"
    png(root / "cat" / "a.png", np.zeros((4, 4), np.uint8))
    png(root / "cow" / "b.png", np.zeros((4, 4), np.uint8))
    refused(catalog, root, r"imgs/cow/b.png: class folder 'cow' is not one of the given labels \(cat, dog\)",
            labels=["cat", "dog"])
    p = write_npz(tmp_path / "a.npz", {"x": np.zeros((3, 4, 4), np.uint8), "y": np.array([0, 1, 7])})
    refused(catalog, p, r"a.npz row 2: label '7' in column 'y' is not one of the given labels \(0, 1\)",
            x_key="x", y_key="y", labels=["0", "1"])


def test_fractional_labels_and_blank_rows(catalog, tmp_path):
    q = parquet(tmp_path / "r.parquet", {"text": ["good", "bad"], "label": [1.0, 0.5]})
    refused(catalog, q, r"r.parquet row 2: label column 'label' is not a class label \(0.5\)")
    c = write(tmp_path / "c.csv", "text,label\ngood,positive\n,\n")
    refused(catalog, c, r"c.csv row 2 \(line 3\): text column 'text' is empty")
    s = write(tmp_path / "s.csv", "text,label\ngood, positive \nbad,negative\n")
    register_dataset(catalog, s, "stripped")
    assert get_dataset(catalog, "stripped")["labels"] == ["negative", "positive"]


def test_malformed_csv_and_jsonl(catalog, tmp_path):
    c = write(tmp_path / "c.csv", "text,label\ngood,positive\nbad,negative,extra\n")
    refused(catalog, c, r"c.csv row 2 \(line 3\): 3 fields, the header has 2")
    q = write(tmp_path / "q.csv", 'text,label\n"good" x,positive\n')
    refused(catalog, q, r"q.csv line 2: not valid CSV")
    j = write(tmp_path / "j.jsonl", '{"text": "good", "label": "p"}\n{"text": "bad", \n')
    refused(catalog, j, r"j.jsonl line 2: not valid JSON")
    a = write(tmp_path / "a.jsonl", '["good", "p"]\n')
    refused(catalog, a, r"a.jsonl line 1: expected a JSON object, got list")


def _rows_digest(ds: Dataset) -> str:
    import hashlib

    h = hashlib.sha256()
    for part in (ds.texts, ds.label_names, None if ds.split is None else ds.split.tolist(),
                 None if ds.groups is None else ds.groups.tolist()):
        h.update(json.dumps(part).encode())
    for arr in (ds.images, ds.labels):
        h.update(b"-" if arr is None else arr.tobytes())
    return h.hexdigest()


def test_another_process_loads_exactly_the_same_rows(catalog, catalog_path, tmp_path):
    import subprocess
    import sys

    from conftest import relman_subprocess_env
    from relman.app.datasets import register_demo_digits, register_demo_sentiment

    register_demo_digits(catalog, n=120)
    register_demo_sentiment(catalog, n=60, val_fraction=0.2, test_fraction=0.2, seed=5)
    code = (
        "import sys, json; sys.path.insert(0, 'tests');"
        "from relman.catalog import open_catalog; from relman.data import load_dataset;"
        "from test_data_readers import _rows_digest;"
        "cat = open_catalog(sys.argv[1], create=False);"
        "print(json.dumps({n: [_rows_digest(load_dataset(cat, n, s)) for s in (None, 'test')] "
        "for n in ('digits', 'sentiment')}))")
    out = subprocess.run([sys.executable, "-c", code, str(catalog_path)], capture_output=True, text=True,
                         env=relman_subprocess_env(), cwd=Path(__file__).resolve().parent.parent, timeout=120)
    assert out.returncode == 0, out.stderr
    there = json.loads(out.stdout)
    here = {n: [_rows_digest(load_dataset(catalog, n, s)) for s in (None, "test")] for n in ("digits", "sentiment")}
    assert there == here
    assert here["digits"][0] != here["digits"][1]


def _png_bytes(a: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def test_parquet_image_column_round_trip_and_errors(catalog, tmp_path):
    import pyarrow as pa

    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, (6, 6), dtype=np.uint8) for _ in range(3)]
    raw = [_png_bytes(a) for a in arrays]
    p = parquet(tmp_path / "img.parquet", {"image": pa.array(raw, pa.binary()), "label": ["a", "b", "a"]})
    row = register_dataset(catalog, p, "pq-img", image_col="image", test_fraction=0.34)
    assert row["kind"] == "image" and row["columns"]["text_col"] is None
    ds = load_dataset(catalog, "pq-img")
    assert ds.images.shape == (3, 6, 6, 1) and np.array_equal(ds.images[..., 0], np.stack(arrays))
    assert ds.labels.tolist() == [0, 1, 0] and ds.texts is None

    # Hugging Face `datasets` style: a struct {bytes, path}
    hf = parquet(tmp_path / "hf.parquet", {"image": [{"bytes": b, "path": None} for b in raw], "label": [0, 1, 0]})
    register_dataset(catalog, hf, "hf-img", image_col="image", image_size=(4, 4))
    assert load_dataset(catalog, "hf-img").images.shape == (3, 4, 4, 1)

    catalog2 = catalog  # the refusals below must leave the two datasets above as they are
    before = (catalog2.query("SELECT COUNT(*) AS n FROM datasets")[0]["n"], sorted(catalog2.store.all_shas()))
    broken = parquet(tmp_path / "broken.parquet", {"image": pa.array([raw[0], b"garbage"], pa.binary()),
                                                   "label": ["a", "b"]})
    with pytest.raises(DatasetError, match=r"broken.parquet row 2: not a decodable image"):
        register_dataset(catalog, broken, "bad", image_col="image")
    texty = parquet(tmp_path / "texty.parquet", {"image": ["x", "y"], "label": ["a", "b"]})
    with pytest.raises(DatasetError, match=r"texty.parquet: image column 'image' has type string, not image bytes"):
        register_dataset(catalog, texty, "bad", image_col="image")
    with pytest.raises(DatasetError, match=r"image column is read from Parquet files only"):
        register_dataset(catalog, write(tmp_path / "d.csv", GOOD_CSV), "bad", image_col="text")
    after = (catalog2.query("SELECT COUNT(*) AS n FROM datasets")[0]["n"], sorted(catalog2.store.all_shas()))
    assert before == after and catalog.orphan_blobs() == []
