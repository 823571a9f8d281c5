"""finetune: training on a tiny separable dataset improves validation accuracy; new head when the
labels differ; FGSM adversarial training; unusable datasets are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from relman.compress.registry import get_recipe
from relman.data import demo
from relman.data.dataset import Dataset
from relman.errors import RecipeError
from relman.jobs.context import JobContext
from relman.modelio.loading import load_preprocessor, load_torch_model

from recipe_support import metric, source


def run_recipe(sources, raw: dict, catalog, dataset: Dataset):
    recipe = get_recipe("finetune")
    params = recipe.resolve_params(raw)
    params["dataset"] = dataset  # a Dataset object stands in for a registered dataset's name
    return recipe.function()(sources, params, JobContext(catalog))


def sentiment(n: int = 160) -> Dataset:
    rows = demo.sentiment_rows(n, seed=3)
    names = demo.SENTIMENT_LABELS
    return Dataset(name="sentiment", kind="text", texts=[r[0] for r in rows],
                   labels=np.array([names.index(r[1]) for r in rows]), label_names=list(names))


def test_text_finetune_improves_validation_accuracy(catalog, tiny_bert, tmp_path):
    src = source(catalog, tiny_bert, "bert", tmp_path)
    out = run_recipe([src], {"epochs": 8, "lr": 2e-3, "batch_size": 8, "patience": 8}, catalog, sentiment())
    before, after = metric(out, "val_accuracy_before"), metric(out, "val_accuracy")
    assert after >= 0.8 and after > before + 0.15, (before, after)
    assert out.meta["new_head"] is False and out.meta["train_samples"] == 128
    child = load_torch_model(out.folder, "text-classification", fmt=out.format)
    tok = load_preprocessor(out.folder, "text-classification")
    with torch.no_grad():
        pred = child(**tok(["i love the movie.", "the plot was awful."], padding=True, return_tensors="pt")).logits
    assert pred.argmax(-1).tolist() == [1, 0]
    assert child.config.id2label == {0: "negative", 1: "positive"}


def test_image_transfer_gets_a_new_head_and_trains_adversarially(catalog, tiny_vit, tmp_path):
    digits = demo.digits(900)
    digits = digits.take(np.flatnonzero(digits.labels < 2))  # zeros and ones, renamed: a new label set
    zero_one = Dataset(name="zero-one", kind="image", images=digits.images, labels=digits.labels,
                       label_names=["zero", "one"], split=digits.split)
    src = source(catalog, tiny_vit, "vit", tmp_path)
    out = run_recipe([src], {"epochs": 6, "lr": 3e-3, "batch_size": 8, "patience": 6, "adversarial": True,
                             "epsilon": 0.02}, catalog, zero_one)
    assert out.meta["new_head"] is True and out.meta["adversarial"] is True
    assert metric(out, "val_accuracy") >= 0.9 > metric(out, "val_accuracy_before")
    child = load_torch_model(out.folder, "image-classification", fmt=out.format)
    assert child.config.id2label == {0: "zero", 1: "one"} and child.classifier.out_features == 2
    proc = load_preprocessor(out.folder, "image-classification")
    pixels = proc(images=list(digits.images[:4]), return_tensors="pt")["pixel_values"]
    assert child(pixel_values=pixels).logits.shape == (4, 2)


def test_unusable_datasets_are_refused(catalog, tiny_bert, tiny_gpt2, tmp_path):
    src = source(catalog, tiny_bert, "bert", tmp_path)
    unlabelled = Dataset(name="raw", kind="text", texts=["a good film"] * 8)
    with pytest.raises(RecipeError, match="dataset 'raw' has no labels"):
        run_recipe([src], {}, catalog, unlabelled)
    with pytest.raises(RecipeError, match="holds image rows but a text-classification model needs text"):
        run_recipe([src], {}, catalog, demo.digits(20))
    with pytest.raises(RecipeError, match="needs a registered dataset"):
        get_recipe("finetune").function()([src], get_recipe("finetune").resolve_params({}), JobContext(catalog))
    lm = source(catalog, tiny_gpt2, "lm", tmp_path)  # a language model learns instructions, not labels
    with pytest.raises(RecipeError, match=r"language model lm@1\.0\.0 needs instruction data.*--format sft"):
        run_recipe([lm], {}, catalog, sentiment(20))
