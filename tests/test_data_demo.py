"""Bundled demo data: scikit-learn's digits and the generated text, deterministic, no network."""

from __future__ import annotations

import re
import string

import numpy as np

from relman.data import demo


def test_digits_scaled_to_uint8_with_seeded_split():
    from sklearn.datasets import load_digits

    ds = demo.digits(val_fraction=0.2, test_fraction=0.2, seed=1)
    raw = load_digits()
    assert ds.images.shape == (1797, 8, 8, 1) and ds.images.dtype == np.uint8
    assert ds.images.max() == 255 and ds.images.min() == 0
    assert np.array_equal(ds.images[..., 0], np.round(raw.images * 255 / 16).astype(np.uint8))
    assert ds.label_names == [str(i) for i in range(10)] and np.array_equal(ds.labels, raw.target)
    assert {s: int((ds.split == s).sum()) for s in ("train", "validation", "test")} == \
        {"train": 1079, "validation": 359, "test": 359}
    again = demo.digits(val_fraction=0.2, test_fraction=0.2, seed=1)
    assert np.array_equal(again.split, ds.split) and again.sha256 == ds.sha256
    assert not np.array_equal(demo.digits(val_fraction=0.2, test_fraction=0.2, seed=2).split, ds.split)


def test_demo_files_are_byte_identical(tmp_path):
    a = demo.write_digits_npz(tmp_path / "a.npz", n=50).read_bytes()
    b = demo.write_digits_npz(tmp_path / "b.npz", n=50).read_bytes()
    assert a == b
    assert demo.sentiment_csv(tmp_path / "a.csv", n=30, seed=4).read_bytes() == \
        demo.sentiment_csv(tmp_path / "b.csv", n=30, seed=4).read_bytes()
    assert demo.sentiment_csv(tmp_path / "c.csv", n=30, seed=5).read_bytes() != \
        demo.sentiment_csv(tmp_path / "d.csv", n=30, seed=4).read_bytes()
    assert demo.lm_text(tmp_path / "a.txt", n=10).read_bytes() == demo.lm_text(tmp_path / "b.txt", n=10).read_bytes()


def test_sentiment_uses_the_tiny_vocabulary_and_has_both_groups():
    from relman.modelio.tiny import _WORDS

    rows = demo.sentiment_rows(300, seed=0)
    words = {w for text, _, _ in rows for w in re.findall(r"[a-z]+", text)}
    assert words <= set(_WORDS) | {"i"}
    assert all(set(text) <= set(string.ascii_lowercase + string.punctuation + " ") for text, _, _ in rows)
    assert {label for _, label, _ in rows} == {"negative", "positive"}
    assert {g for _, _, g in rows} == {"group-a", "group-b"}
    assert sum(label == "positive" for _, label, _ in rows) > 100


def test_digits_folder_reads_back_like_the_arrays(catalog, tmp_path):
    from relman.app.datasets import load_dataset, register_dataset

    folder = demo.write_digits_folder(tmp_path / "digits", n=40)
    register_dataset(catalog, folder, "folder")
    ds = load_dataset(catalog, "folder")
    ref = demo.digits(n=40, val_fraction=0, test_fraction=0)
    # sorted by class folder, then file name (the original index)
    order = sorted(range(40), key=lambda i: (ref.labels[i], i))
    assert np.array_equal(ds.images, ref.images[order])
    assert [ds.label_names[i] for i in ds.labels] == [ref.label_names[ref.labels[i]] for i in order]
