"""Helpers for the LoRA / DP / adapter-merge tests: a planted-signal dataset, a finetune run
committed as a real child version (the compress job's own commit), and adapter sources laid
out the way workers lay them out (base beside the adapter)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from relman.compress.job import commit_child
from relman.compress.registry import ModelSource, get_recipe
from relman.data.dataset import Dataset
from relman.jobs.context import JobContext
from relman.modelio.loading import materialize_version

SIGNAL = {"great": 1, "awful": 0}
_NOISE = ["the", "a", "movie", "film", "plot", "actor", "is", "was", "and", "very", "fine", "fun"]


def planted(n: int = 200, seed: int = 0) -> Dataset:
    """Random noise words around one planted word that alone decides the label."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        y = int(rng.random() < 0.5)
        words = [rng.choice(_NOISE) for _ in range(rng.randint(3, 7))]
        words.insert(rng.randrange(len(words) + 1), "great" if y else "awful")
        texts.append(" ".join(words))
        labels.append(y)
    return Dataset(name=f"planted-{seed}", kind="text", texts=texts, labels=np.array(labels),
                   label_names=["negative", "positive"], sha256=f"planted-{n}-{seed}")


def lay_out(catalog, version, workdir: Path) -> ModelSource:
    return ModelSource(version, materialize_version(catalog, version.id, workdir))


def run_finetune(catalog, parent, raw: dict, dataset: Dataset, workdir: Path, *, model: str | None = None):
    """Run the finetune recipe on `parent` and commit the child as the compress job does."""
    recipe = get_recipe("finetune")
    params = recipe.resolve_params(raw)
    params["dataset"] = dataset
    ctx = JobContext(catalog, workdir=workdir)
    out = recipe.function()([lay_out(catalog, parent, workdir / "parents")], params, ctx)
    child = commit_child(ctx, recipe, [parent], {**params, "dataset": dataset.name}, out, model=model, version=None,
                         dataset=None)
    return out, child


def run_recipe_commit(catalog, name: str, parents: list, raw: dict, workdir: Path):
    recipe = get_recipe(name)
    params = recipe.resolve_params(raw)
    ctx = JobContext(catalog, workdir=workdir)
    sources = [lay_out(catalog, p, workdir / "parents") for p in parents]
    out = recipe.function()(sources, params, ctx)
    return out, commit_child(ctx, recipe, parents, params, out, model=None, version=None, dataset=None)
