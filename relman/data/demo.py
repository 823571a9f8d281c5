"""Bundled demo data that needs no network, generated deterministically.

- `digits()`: scikit-learn's bundled 8x8 grey digits (values 0..16 scaled to uint8 0..255,
  labels "0".."9"), as a Dataset with a seeded split; `write_digits_npz` writes them as NPZ.
- `sentiment_csv()`: sentences built from the few whole words the tiny BERT's vocabulary has,
  labelled negative/positive, with a group column for fairness.
- `lm_text()`: the same kind of sentences as plain text lines, for perplexity.

Files are byte-identical for the same arguments (fixed zip timestamps, seeded generators), so
registering the demo twice anywhere gives the same dataset hash.
"""

from __future__ import annotations

import csv
import hashlib
import io
import random
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

from relman.data.dataset import Dataset
from relman.data.splits import seeded_split

DIGIT_LABELS = [str(i) for i in range(10)]
SENTIMENT_LABELS = ["negative", "positive"]   # the order of tiny_bert_classifier's labels
GROUPS = ["group-a", "group-b"]

_NOUNS = ["movie", "film", "plot", "actor"]
_POSITIVE = ["good", "great", "fun", "fine"]
_NEGATIVE = ["bad", "awful", "boring"]


def _digit_arrays(n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[..., None]
    labels = d.target.astype(np.int64)
    if n is not None:
        images, labels = images[:n], labels[:n]
    return np.ascontiguousarray(images), labels


def digits(n: int | None = None, *, val_fraction: float = 0.2, test_fraction: float = 0.2,
           seed: int = 0) -> Dataset:
    """The digits as an in-memory image Dataset (N x 8 x 8 x 1 uint8), first `n` rows if given."""
    images, labels = _digit_arrays(n)
    h = hashlib.sha256()
    h.update(images.tobytes())
    h.update(labels.tobytes())
    split = seeded_split(len(labels), val_fraction, test_fraction, seed) if (val_fraction or test_fraction) \
        else None
    return Dataset(name="digits", kind="image", sha256=h.hexdigest(), images=images, labels=labels,
                   label_names=list(DIGIT_LABELS), split=split,
                   meta={"source": "sklearn.datasets.load_digits", "seed": seed})


def write_npz(path: Path | str, arrays: Mapping[str, np.ndarray]) -> Path:
    """An uncompressed .npz with fixed timestamps, so equal arrays give equal bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())
    tmp.replace(path)
    return path


def write_digits_npz(path: Path | str, n: int | None = None) -> Path:
    """The digits as NPZ with keys 'images' (N x 8 x 8 x 1 uint8) and 'labels' (int64)."""
    images, labels = _digit_arrays(n)
    return write_npz(path, {"images": images, "labels": labels})


def write_digits_folder(folder: Path | str, n: int | None = None) -> Path:
    """The digits as an image folder (one sub-folder per digit, 8x8 greyscale PNGs)."""
    from PIL import Image

    folder = Path(folder)
    images, labels = _digit_arrays(n)
    for i, (img, y) in enumerate(zip(images, labels)):
        d = folder / str(int(y))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[:, :, 0], mode="L").save(d / f"{i:05d}.png")
    return folder


def sentence(rng: random.Random, positive: bool, negated_bias: float = 0.2) -> str:
    """One sentence whose sentiment is `positive`, from the tiny vocabulary."""
    noun = rng.choice(_NOUNS)
    negate = rng.random() < negated_bias
    # A negated sentence uses an adjective of the opposite polarity.
    adj_pool = (_NEGATIVE if positive else _POSITIVE) if negate else (_POSITIVE if positive else _NEGATIVE)
    adj = rng.choice(adj_pool)
    verb = rng.choice(["is", "was"])
    if negate:
        return f"the {noun} {verb} not {adj}."
    form = rng.randrange(5)
    if form == 0:
        return f"the {noun} {verb} {adj}."
    if form == 1:
        return f"the {noun} {verb} very {adj}!"
    if form == 2:
        return f"a {adj} {noun}, {adj} and {rng.choice(adj_pool)}."
    if form == 3:
        return f"i {'love' if positive else 'hate'} the {noun}."
    other = rng.choice([n for n in _NOUNS if n != noun])
    return f"the {noun} was {adj} and the {other} was {rng.choice(adj_pool)}."


def sentiment_rows(n: int = 200, seed: int = 0) -> list[tuple[str, str, str]]:
    """(text, label, group) rows; group-b sentences are negated more often (harder), so a
    fairness suite has a real gap to find."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        positive = rng.random() < 0.5
        group = GROUPS[rng.random() < 0.4]
        rows.append((sentence(rng, positive, 0.1 if group == "group-a" else 0.35),
                     SENTIMENT_LABELS[int(positive)], group))
    return rows


def sentiment_csv(path: Path | str, n: int = 200, seed: int = 0) -> Path:
    """Write `n` generated rows to a CSV with columns text,label,group."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["text", "label", "group"])
        w.writerows(sentiment_rows(n, seed))
    return path


def lm_text(path: Path | str, n: int = 100, seed: int = 0) -> Path:
    """Write `n` generated sentences, one a line, for perplexity."""
    rng = random.Random(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [sentence(rng, rng.random() < 0.5) for _ in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
