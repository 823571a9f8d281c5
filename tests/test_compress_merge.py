"""merge-fedavg: tensor-wise weighted average of versions of one architecture."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from relman.catalog import Metric
from relman.compress.registry import get_recipe
from relman.errors import RecipeError
from relman.jobs.context import JobContext
from relman.modelio import tiny
from relman.modelio.loading import load_preprocessor, load_torch_model

from recipe_support import source


def run_recipe(sources, raw: dict, catalog):
    recipe = get_recipe("merge-fedavg")
    return recipe.function()(sources, recipe.resolve_params(raw), JobContext(catalog))


@pytest.fixture(scope="module")
def bert_seed1(tmp_path_factory) -> Path:
    return tiny.tiny_bert_classifier(tmp_path_factory.mktemp("b1") / "bert", seed=1)


def test_weighted_average_is_exact_tensor_by_tensor(catalog, tiny_bert, bert_seed1, tmp_path):
    a, b = source(catalog, tiny_bert, "site-a", tmp_path), source(catalog, bert_seed1, "site-b", tmp_path)
    out = run_recipe([a, b], {"weights": "300,100"}, catalog)
    assert out.meta["parent_weights"] == [0.75, 0.25] and out.meta["weights_source"] == "param"
    ta, tb = load_file(str(a.folder / "model.safetensors")), load_file(str(b.folder / "model.safetensors"))
    merged = load_file(str(out.folder / "model.safetensors"))
    assert set(merged) == set(ta)
    for name, t in merged.items():
        expected = (0.75 * ta[name].double() + 0.25 * tb[name].double()).to(ta[name].dtype)
        assert torch.allclose(t, expected, atol=1e-7), name
    assert not torch.equal(merged["classifier.weight"], ta["classifier.weight"])
    child = load_torch_model(out.folder, "text-classification", fmt=out.format)
    tok = load_preprocessor(out.folder, "text-classification")
    assert child(**tok(["a great film"], return_tensors="pt")).logits.shape == (1, 2)
    assert out.params == sum(p.numel() for p in child.parameters())


def test_two_copies_merge_to_the_same_model_with_recorded_sample_weights(catalog, tiny_bert, tmp_path):
    a = source(catalog, tiny_bert, "copy-a", tmp_path)
    b = source(catalog, tiny_bert, "copy-b", tmp_path)
    catalog.add_metrics(a.version.id, [Metric("compress", "train_samples", 10.0)])
    catalog.add_metrics(b.version.id, [Metric("compress", "train_samples", 30.0)])
    out = run_recipe([a, b], {}, catalog)
    assert out.meta["weights_source"] == "train_samples" and out.meta["parent_weights"] == [0.25, 0.75]
    assert out.meta["train_samples"] == 40.0
    ta, merged = load_file(str(a.folder / "model.safetensors")), load_file(str(out.folder / "model.safetensors"))
    for name in ta:
        assert torch.allclose(merged[name], ta[name], atol=1e-6), name


def test_mismatched_shapes_and_keys_are_refused_naming_the_tensor(catalog, tiny_bert, tiny_bert_encoder, tmp_path):
    a = source(catalog, tiny_bert, "a", tmp_path)
    wide = tiny.tiny_bert_classifier(tmp_path / "wide", intermediate=48)
    with pytest.raises(RecipeError, match=r"tensor 'bert\.encoder\.layer\.0\.intermediate\.dense\.bias' has shape "
                                          r"\[48\] in wide@1\.0\.0 but \[64\] in a@1\.0\.0"):
        run_recipe([a, source(catalog, wide, "wide", tmp_path)], {}, catalog)
    enc = source(catalog, tiny_bert_encoder, "enc", tmp_path)
    with pytest.raises(RecipeError, match="tensor '.*' of a@1.0.0 is missing from enc@1.0.0"):
        run_recipe([a, enc], {}, catalog)
    with pytest.raises(RecipeError, match="needs at least two"):
        run_recipe([a], {}, catalog)
    with pytest.raises(RecipeError, match="2 parents"):
        run_recipe([a, a], {"weights": "1,2,3"}, catalog)
