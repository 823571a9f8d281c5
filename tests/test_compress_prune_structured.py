"""prune-structured: heads and FFN neurons really removed; the child loads, runs, and is smaller."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from relman.compress.registry import ModelSource, get_recipe
from relman.data import demo
from relman.data.dataset import Dataset
from relman.errors import RecipeError
from relman.jobs.context import JobContext
from relman.modelio.loading import load_preprocessor, load_torch_model

from recipe_support import source


def run_recipe(sources, raw: dict, catalog, dataset: Dataset | None = None):
    recipe = get_recipe("prune-structured")
    params = recipe.resolve_params(raw)
    if dataset is not None:
        params["dataset"] = dataset
    return recipe.function()(sources, params, JobContext(catalog))


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def test_heads_and_neurons_removed_shrink_the_bert(catalog, tiny_bert, tmp_path):
    src = source(catalog, tiny_bert, "bert", tmp_path)
    out = run_recipe([src], {"heads": 0.5, "ffn": 0.5}, catalog)
    assert out.format == "hf-reshaped"
    assert out.meta["heads_removed_per_layer"] == 2 and out.meta["ffn_width_after"] == 32
    parent = load_torch_model(src.folder, "text-classification")
    child = load_torch_model(out.folder, "text-classification", fmt=out.format)
    n_child = sum(p.numel() for p in child.parameters())
    assert n_child == out.params < sum(p.numel() for p in parent.parameters())
    assert folder_bytes(out.folder) < folder_bytes(src.folder)
    layer = child.bert.encoder.layer[1]
    assert layer.attention.self.query.weight.shape == (16, 32)          # 2 heads x 8 dims kept
    assert layer.attention.output.dense.weight.shape == (32, 16)
    assert layer.intermediate.dense.weight.shape == (32, 32) and child.config.intermediate_size == 32
    tok = load_preprocessor(out.folder, "text-classification")
    enc = tok(["the movie was good", "a boring plot"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = child(**enc).logits
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


def test_the_least_important_head_is_the_one_removed(catalog, tiny_bert, tmp_path):
    model = load_torch_model(tiny_bert, "text-classification")
    attn = model.bert.encoder.layer[0].attention
    with torch.no_grad():  # make head 2 of layer 0 nearly silent
        for lin in (attn.self.query, attn.self.key, attn.self.value):
            lin.weight[16:24] *= 1e-3
        attn.output.dense.weight[:, 16:24] *= 1e-3
    weak = tmp_path / "weak"
    model.save_pretrained(str(weak))
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        if (tiny_bert / f).exists():
            (weak / f).write_bytes((tiny_bert / f).read_bytes())
    src = source(catalog, weak, "weak", tmp_path)
    out = run_recipe([src], {"heads": 0.25, "ffn": 0.0}, catalog)
    child = load_torch_model(out.folder, "text-classification", fmt=out.format)
    kept_rows = torch.cat([torch.arange(0, 16), torch.arange(24, 32)])
    assert torch.equal(child.bert.encoder.layer[0].attention.self.query.weight, attn.self.query.weight[kept_rows])
    assert torch.equal(child.bert.encoder.layer[0].attention.output.dense.weight,
                       attn.output.dense.weight[:, kept_rows])


def test_ffn_only_child_is_a_plain_hf_folder(catalog, tiny_vit, tmp_path):
    from transformers import AutoModelForImageClassification

    src = source(catalog, tiny_vit, "vit", tmp_path)
    out = run_recipe([src], {"heads": 0.0, "ffn": 0.25}, catalog)
    assert out.format == "hf"
    plain = AutoModelForImageClassification.from_pretrained(str(out.folder), local_files_only=True)
    assert plain.config.intermediate_size == 48
    assert sum(p.numel() for p in plain.parameters()) == out.params
    pixels = load_preprocessor(out.folder, "image-classification")(
        images=list(demo.digits(3).images), return_tensors="pt")["pixel_values"]
    assert plain(pixel_values=pixels).logits.shape == (3, 10)
    # ViT heads can go too
    out2 = run_recipe([src], {"heads": 0.5, "ffn": 0.0}, catalog)
    child = load_torch_model(out2.folder, "image-classification", fmt=out2.format)
    assert child.vit.layers[0].attention.q_proj.out_features == 16
    assert child(pixel_values=pixels).logits.shape == (3, 10)


def test_recovery_finetune_brings_the_encoder_back_towards_its_parent(catalog, tiny_bert_encoder, tmp_path):
    rows = demo.sentiment_rows(64, seed=1)
    texts = Dataset(name="sentences", kind="text", texts=[r[0] for r in rows])
    src = source(catalog, tiny_bert_encoder, "enc", tmp_path)
    out = run_recipe([src], {"heads": 0.5, "ffn": 0.5, "epochs": 3, "lr": 2e-3, "batch_size": 8}, catalog, texts)
    losses = out.meta["recovery_epoch_losses"]
    assert len(losses) == 3 and losses[-1] < losses[0]
    child = load_torch_model(out.folder, "feature-extraction", fmt=out.format)
    assert sum(p.numel() for p in child.parameters()) == out.params


def test_unsupported_or_empty_pruning_is_refused(catalog, tiny_gpt2, tiny_bert, tmp_path):
    gpt = source(catalog, tiny_gpt2, "gpt", tmp_path)
    with pytest.raises(RecipeError, match="cannot remove attention heads from a gpt2 model"):
        run_recipe([gpt], {"heads": 0.5}, catalog)
    out = run_recipe([gpt], {"heads": 0.0, "ffn": 0.5}, catalog)  # GPT-2's MLP (Conv1D) can shrink
    child = load_torch_model(out.folder, "causal-lm", fmt=out.format)
    assert child.config.n_inner == 64 and child.transformer.h[0].mlp.c_fc.weight.shape == (32, 64)
    tok = load_preprocessor(out.folder, "causal-lm")
    assert np.isfinite(child(**tok(["hi"], return_tensors="pt")).logits.detach().numpy()).all()
    bert = source(catalog, tiny_bert, "bert", tmp_path)
    with pytest.raises(RecipeError, match="nothing to prune"):
        run_recipe([bert], {"heads": 0.0, "ffn": 0.0}, catalog)
    lowrank = get_recipe("lowrank-svd")
    factored = lowrank.function()([bert], lowrank.resolve_params({"rank": 4}), JobContext(catalog))
    v = catalog.add_version("bert", {p.name: p for p in factored.folder.iterdir()}, format=factored.format,
                            task="text-classification")
    with pytest.raises(RecipeError, match="not a plain Linear layer"):
        run_recipe([ModelSource(v, factored.folder)], {"heads": 0.5}, catalog)
