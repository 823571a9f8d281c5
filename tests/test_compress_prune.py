"""prune-magnitude on tiny real models: the child loads, runs, and has the sparsity recorded."""

from __future__ import annotations

import pytest
import torch

from relman.compress.registry import get_recipe
from relman.errors import RecipeError
from relman.modelio.loading import load_preprocessor, load_torch_model

from recipe_support import metric, run_recipe, source


def test_global_magnitude_pruning_reaches_target_sparsity_and_loads(catalog, tiny_bert, tmp_path):
    src = source(catalog, tiny_bert, "bert", tmp_path)
    out = run_recipe("prune-magnitude", [src], {"sparsity": "0.6"}, catalog)
    assert out.format == "hf"
    assert metric(out, "sparsity") == pytest.approx(0.6, abs=0.005)
    child = load_torch_model(out.folder, "text-classification", fmt=out.format)
    parent = load_torch_model(src.folder, "text-classification")
    weights = [m.weight for n, m in child.named_modules() if isinstance(m, torch.nn.Linear) and "classifier" not in n]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.6, abs=0.005)
    # the excluded head is untouched, and the model still runs on tokenised text
    assert torch.equal(child.classifier.weight, parent.classifier.weight)
    tok = load_preprocessor(out.folder, "text-classification")
    logits = child(**tok(["the movie was good"], return_tensors="pt")).logits
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()
    assert out.params == sum(p.numel() for p in parent.parameters())


def test_per_layer_scope_prunes_every_layer_equally(catalog, tiny_gpt2, tmp_path):
    src = source(catalog, tiny_gpt2, "gpt", tmp_path)
    out = run_recipe("prune-magnitude", [src], {"sparsity": 0.3, "scope": "layer"}, catalog)
    per_layer = out.meta["per_layer_sparsity"]
    assert per_layer and all(v == pytest.approx(0.3, abs=0.01) for v in per_layer.values())
    child = load_torch_model(out.folder, "causal-lm", fmt=out.format)
    tok = load_preprocessor(out.folder, "causal-lm")
    assert child(**tok(["hello"], return_tensors="pt")).logits.shape[-1] == child.config.vocab_size


def test_bad_sparsity_and_empty_selection_are_refused(catalog, tiny_bert, tmp_path):
    with pytest.raises(RecipeError, match="sparsity"):
        get_recipe("prune-magnitude").resolve_params({"sparsity": "1.5"})
    src = source(catalog, tiny_bert, "bert", tmp_path)
    with pytest.raises(RecipeError, match="no Linear layer left"):
        run_recipe("prune-magnitude", [src], {"exclude": "encoder,pooler,classifier"}, catalog)
