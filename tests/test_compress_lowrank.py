"""lowrank-svd: Linear layers become two SVD factors; parameters drop by the predicted amount."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from relman.compress.registry import get_recipe
from relman.errors import RecipeError
from relman.jobs.context import JobContext
from relman.modelio.loading import load_preprocessor, load_torch_model

from conftest import relman_subprocess_env

from recipe_support import metric, run_recipe, source


def test_fixed_rank_reduces_params_by_the_predicted_amount(catalog, tiny_bert, tmp_path):
    src = source(catalog, tiny_bert, "bert", tmp_path)
    out = run_recipe("lowrank-svd", [src], {"rank": 8}, catalog)
    assert out.format == "hf-reshaped"
    predicted, achieved = metric(out, "param_reduction_predicted"), metric(out, "param_reduction_achieved")
    assert achieved > 0.1 and achieved == pytest.approx(predicted, rel=1e-9)
    parent = load_torch_model(src.folder, "text-classification")
    child = load_torch_model(out.folder, "text-classification", fmt=out.format)
    n_parent = sum(p.numel() for p in parent.parameters())
    assert sum(p.numel() for p in child.parameters()) == out.params == round(n_parent * (1 - predicted))
    # every query/key/value/dense layer of the encoder is factorised, the head is not
    assert all(r["rank"] == 8 for r in out.meta["layers"].values())
    assert not any("classifier" in n for n in out.meta["layers"])
    cfg = json.loads((out.folder / "config.json").read_text())
    assert set(cfg["relman_surgery"]["lowrank"]) == set(out.meta["layers"])
    tok = load_preprocessor(out.folder, "text-classification")
    enc = tok(["the film was great", "boring plot"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert child(**enc).logits.shape == parent(**enc).logits.shape == (2, 2)


def test_factors_are_the_best_rank_r_approximation(catalog, tiny_bert_encoder, tmp_path):
    src = source(catalog, tiny_bert_encoder, "enc", tmp_path)
    out = run_recipe("lowrank-svd", [src], {"energy": 0.6}, catalog)
    parent = load_torch_model(src.folder, "feature-extraction")
    child = load_torch_model(out.folder, "feature-extraction", fmt=out.format)
    for name, info in out.meta["layers"].items():
        w = parent.get_submodule(name).weight.detach().double()
        factors = child.get_submodule(name)
        approx = (factors[1].weight @ factors[0].weight).detach().double()
        assert factors[0].weight.shape[0] == info["rank"]
        # Eckart-Young: the residual holds exactly the energy that was dropped
        residual = float(((w - approx) ** 2).sum() / (w ** 2).sum())
        assert residual == pytest.approx(1 - info["energy_kept"], abs=1e-4)
        assert info["energy_kept"] >= 0.6
        assert torch.equal(factors[1].bias, parent.get_submodule(name).bias)


def test_reshaped_child_loads_in_a_fresh_worker_process(catalog, tiny_gpt2, tmp_path):
    """The hf-reshaped loader is found by format name alone (no recipe module imported)."""
    src = source(catalog, tiny_gpt2, "gpt", tmp_path)
    out = run_recipe("lowrank-svd", [src], {"rank": 4}, catalog)
    code = ("import sys; from relman.modelio.loading import load_torch_model;"
            f"m = load_torch_model({str(out.folder)!r}, 'causal-lm', fmt='hf-reshaped');"
            "print(sum(p.numel() for p in m.parameters()))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=relman_subprocess_env(), timeout=120)
    assert res.returncode == 0, res.stderr
    child = load_torch_model(out.folder, "causal-lm", fmt=out.format)
    assert int(res.stdout.split()[-1]) == sum(p.numel() for p in child.parameters())


def test_rank_too_large_is_refused_with_the_largest_useful_rank(catalog, tiny_bert, tmp_path):
    src = source(catalog, tiny_bert, "bert", tmp_path)
    with pytest.raises(RecipeError, match=r"rank 40 is too large.*largest useful rank is 21"):
        run_recipe("lowrank-svd", [src], {"rank": 40}, catalog)
    with pytest.raises(RecipeError, match="no layer would get smaller"):
        run_recipe("lowrank-svd", [src], {"energy": 1.0}, catalog)


def test_recovery_distillation_after_factorising(catalog, tiny_bert_encoder, tmp_path):
    from relman.data import demo
    from relman.data.dataset import Dataset

    rows = demo.sentiment_rows(48, seed=2)
    src = source(catalog, tiny_bert_encoder, "enc", tmp_path)
    recipe = get_recipe("lowrank-svd")
    params = recipe.resolve_params({"rank": 6, "epochs": 3, "lr": 2e-3, "batch_size": 8})
    params["dataset"] = Dataset(name="sentences", kind="text", texts=[r[0] for r in rows])
    out = recipe.function()([src], params, JobContext(catalog))
    losses = out.meta["recovery_epoch_losses"]
    assert len(losses) == 3 and losses[-1] < losses[0]
    child = load_torch_model(out.folder, "feature-extraction", fmt=out.format)
    assert sum(p.numel() for p in child.parameters()) == out.params  # training kept the factorised shapes
