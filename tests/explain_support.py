"""Planted-signal models for the explanation tests, trained in the test in a few seconds.

Text: sentences of neutral filler words; the positive ones hold the word "great" at a random
position, the negative ones do not. Images: 8 x 8 dark noise, with one bright 2 x 2
patch on the ViT patch grid for class 1 (none for class 0). A model
that learned the task must rest its decision on the planted feature, so a faithful explainer
has to find it.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np

FILLER = ["the", "a", "movie", "film", "is", "was", "plot", "actor", "and", "very"]
DECISIVE = {"positive": "great"}
LABELS = ("negative", "positive")


def planted_text_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Rows of filler words; a "positive" row holds the planted word "great" at a random place,
    a "negative" row does not: that one token decides the label."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = LABELS[rng.random() < 0.5]
        words = [rng.choice(FILLER) for _ in range(rng.randint(4, 7))]
        if label in DECISIVE:
            words.insert(rng.randrange(len(words) + 1), DECISIVE[label])
        rows.append((" ".join(words), label))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["text", "label"])
        w.writerows(rows)
    return path


def text_dataset(rows: list[tuple[str, str]], name: str = "planted", labels: tuple[str, ...] = LABELS):
    from relman.data.dataset import Dataset

    return Dataset(name=name, kind="text", sha256=f"{name}-{len(rows)}", texts=[t for t, _ in rows],
                   labels=np.array([labels.index(l) for _, l in rows], dtype=np.int64), label_names=list(labels))


def train_text_classifier(folder: Path, rows: list[tuple[str, str]], *, epochs: int = 6, seed: int = 0,
                          hidden: int = 32, labels: tuple[str, ...] = LABELS) -> Path:
    """A tiny BERT trained on `rows` (folder is a complete HF folder afterwards)."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from relman.modelio import tiny

    tiny.tiny_bert_classifier(folder, labels, seed=seed, hidden=hidden, intermediate=2 * hidden)
    tok = AutoTokenizer.from_pretrained(folder)
    model = BertForSequenceClassification.from_pretrained(folder)
    enc = tok([t for t, _ in rows], padding=True, return_tensors="pt")
    y = torch.tensor([labels.index(l) for _, l in rows])
    _train(model, {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}, y, epochs, seed)
    model.eval().save_pretrained(folder, safe_serialization=True)
    return folder


def planted_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int] | None]]:
    """(images N x 8 x 8 x 1 uint8, labels, where the planted patch is (row, col) on the 4 x 4
    patch grid, or None). Class 1 = the image holds one bright patch; class 0 = noise only, so
    the patch is the whole evidence for class 1."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(n, 8, 8, 1)).astype(np.uint8)
    labels = rng.integers(0, 2, size=n).astype(np.int64)
    where: list[tuple[int, int] | None] = []
    for i in range(n):
        if not labels[i]:
            where.append(None)
            continue
        r, c = (int(v) for v in rng.integers(0, 4, size=2))
        images[i, 2 * r:2 * r + 2, 2 * c:2 * c + 2, 0] = 255
        where.append((r, c))
    return images, labels, where


def image_dataset(images: np.ndarray, labels: np.ndarray, name: str = "bright"):
    from relman.data.dataset import Dataset

    return Dataset(name=name, kind="image", sha256=f"{name}-{len(images)}", images=images, labels=labels,
                   label_names=["0", "1"])


def train_image_classifier(folder: Path, images: np.ndarray, labels: np.ndarray, *, epochs: int = 25,
                           seed: int = 0) -> Path:
    import torch
    from transformers import ViTForImageClassification

    from relman.modelio import tiny

    tiny.tiny_vit_classifier(folder, num_labels=2, seed=seed)
    model = ViTForImageClassification.from_pretrained(folder)
    px = torch.from_numpy((images.astype(np.float32) / 255.0 - 0.5) / 0.5).permute(0, 3, 1, 2).contiguous()
    _train(model, {"pixel_values": px}, torch.from_numpy(labels), epochs, seed)
    model.eval().save_pretrained(folder, safe_serialization=True)
    return folder


def _train(model, inputs: dict, y, epochs: int, seed: int, batch: int = 32, lr: float = 3e-3) -> None:
    import torch

    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: more threads only contend on a shared machine
    try:
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        model.train()
        n = len(y)
        for _ in range(epochs):
            perm = torch.randperm(n)
            for s in range(0, n, batch):
                idx = perm[s:s + batch]
                loss = model(**{k: v[idx] for k, v in inputs.items()}, labels=y[idx]).loss
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()


def accuracy(folder: Path, ds, task: str) -> float:
    from relman.tasks import open_runner

    runner = open_runner(folder, "hf", task, "cpu", 1)
    pred = runner.predict_dataset(ds, 64).argmax(axis=1)
    return float(np.mean(pred == ds.labels))


def compress_child_version(catalog, parent_id: int, recipe: str, params: dict | None = None):
    """A child made by the real compress job (run directly, no evaluation queued)."""
    from relman.compress import job
    from relman.jobs.context import JobContext

    ctx = JobContext(catalog)
    try:
        result = job.run({"recipe": recipe, "params": params or {}, "parent_version_ids": [parent_id],
                          "evaluate": False}, ctx)
    finally:
        ctx.cleanup()
    return catalog.get_version(result["version_id"])


def compress_child(catalog, parent_id: int, recipe: str, tmp_path: Path) -> Path:
    """The child's folder, laid out from the store."""
    v = compress_child_version(catalog, parent_id, recipe)
    return catalog.materialize(v.id, tmp_path / f"child-{v.id}")


def train_digits_vit(folder: Path, ds, *, epochs: int = 30, seed: int = 0) -> Path:
    """The demo ViT (relman.modelio.tiny, 10 classes, 2 x 2 patches) trained on the digits in `ds`."""
    import torch
    from transformers import ViTForImageClassification

    from relman.modelio import tiny

    tiny.tiny_vit_classifier(folder, num_labels=10, seed=seed)
    model = ViTForImageClassification.from_pretrained(folder)
    px = torch.from_numpy((ds.images.astype(np.float32) / 255.0 - 0.5) / 0.5).permute(0, 3, 1, 2).contiguous()
    _train(model, {"pixel_values": px}, torch.from_numpy(ds.labels), epochs, seed)
    model.eval().save_pretrained(folder, safe_serialization=True)
    return folder


def reinitialised_copy(folder: Path, out: Path, seed: int = 1) -> Path:
    """A complete HF folder of `folder`'s model with every weight re-initialised (the
    randomisation check's copy, saved so it can be imported as a version)."""
    import shutil

    from transformers import AutoModel, AutoModelForImageClassification, AutoModelForSequenceClassification

    from relman.evaluate.explain.sanity import reinitialise

    shutil.copytree(folder, out)
    for cls in (AutoModelForImageClassification, AutoModelForSequenceClassification, AutoModel):
        try:
            model = cls.from_pretrained(folder)
            break
        except (ValueError, KeyError):
            continue
    reinitialise(model, seed).eval().save_pretrained(out, safe_serialization=True)
    return out
