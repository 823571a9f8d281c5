"""LoRA fine-tuning (finetune method=lora): a small `peft-adapter` version pinned to its base,
the same logits as its merged model, a planted signal learned; a missing or altered base is
refused by name; bad target modules refused before training; encoders become classifiers;
merge-adapter refuses quantised or foreign bases."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from relman.app.models import import_model
from relman.catalog import open_catalog
from relman.compress.registry import get_recipe
from relman.errors import AdapterBaseError, RecipeError
from relman.jobs.context import JobContext
from relman.modelio import peft_adapter, tiny
from relman.modelio.loading import load_preprocessor, load_torch_model, materialize_version

from adapter_support import lay_out, planted, run_finetune, run_recipe_commit

LORA = {"method": "lora", "r": 4, "alpha": 8, "target_modules": "query,value", "epochs": 5, "lr": 5e-3,
        "batch_size": 16, "patience": 5}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One base (a tiny BERT, hidden 64) and one LoRA child trained on a planted signal."""
    root = tmp_path_factory.mktemp("lora")
    cat = open_catalog(root / "catalog")
    base = import_model(cat, tiny.tiny_bert_classifier(root / "bert", hidden=64, intermediate=128), "bert")
    out, child = run_finetune(cat, base, LORA, planted(200), root / "work")
    yield cat, base, out, child, root
    cat.close()


def predict(model, tok, texts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return model(**tok(texts, padding=True, return_tensors="pt")).logits


def test_adapter_is_small_learns_the_signal_and_equals_its_merge(trained):
    cat, base, out, child, root = trained
    assert child.format == "peft-adapter" and child.task == "text-classification"
    assert sorted(a["path"] for a in cat.artifacts(child.id)) == sorted(peft_adapter.FILES)
    assert child.size_bytes < 0.05 * base.size_bytes, (child.size_bytes, base.size_bytes)
    assert [p["parent_id"] for p in cat.parents(child.id)] == [base.id]
    pin = child.meta["adapter"]
    assert (pin["base_version_id"], pin["base_manifest_sha256"]) == (base.id, base.manifest_sha256)

    folder = materialize_version(cat, child.id, root / "eval")
    model = load_torch_model(folder, "text-classification", fmt="peft-adapter")
    tok = load_preprocessor(folder, "text-classification")
    held_out = planted(120, seed=7)  # rows never seen in training
    logits = predict(model, tok, list(held_out.texts))
    accuracy = float((logits.argmax(-1).numpy() == held_out.labels).mean())
    assert accuracy >= 0.9, accuracy

    merged_out, merged = run_recipe_commit(cat, "merge-adapter", [child], {}, root / "merge")
    assert merged.format == "hf" and [p["parent_id"] for p in cat.parents(merged.id)] == [child.id, base.id]
    assert {m.name: m.value for m in merged_out.metrics}["merge_agreement"] == 1.0
    merged_model = load_torch_model(materialize_version(cat, merged.id, root / "eval"), "text-classification")
    diff = (predict(merged_model, tok, list(held_out.texts)) - logits).abs().max().item()
    assert diff <= 1e-4, diff


def _write_blob(path: Path, data: bytes) -> None:
    """Put other bytes at a blob's path as a new file (hard links to the old one keep theirs)."""
    tmp = path.with_name(path.name + ".swap")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def test_missing_or_altered_base_refuses_to_load_naming_it(trained, tmp_path):
    cat, base, _, child, _ = trained
    weights = next(a for a in cat.artifacts(base.id) if a["path"] == "model.safetensors")
    blob = cat.store.path(weights["sha256"])
    old = blob.read_bytes()
    try:
        blob.unlink()
        with pytest.raises(AdapterBaseError, match=r"its base bert@1\.0\.0 .* missing"):
            materialize_version(cat, child.id, tmp_path / "missing")
        _write_blob(blob, old[:-8] + b"\0" * 8)  # same size, other bytes
        folder = materialize_version(cat, child.id, tmp_path / "altered")
        with pytest.raises(AdapterBaseError, match=r"bert@1\.0\.0 .* the base was altered"):
            load_torch_model(folder, "text-classification", fmt="peft-adapter")
    finally:
        _write_blob(blob, old)
    cat.conn.execute("UPDATE versions SET manifest_sha256 = ? WHERE id = ?", ["0" * 64, base.id])
    try:
        with pytest.raises(AdapterBaseError, match=r"bert@1\.0\.0 .*manifest is now 000000000000"):
            materialize_version(cat, child.id, tmp_path / "row")
    finally:
        cat.conn.execute("UPDATE versions SET manifest_sha256 = ? WHERE id = ?", [base.manifest_sha256, base.id])
    bare = tmp_path / "bare"  # the adapter's files alone, e.g. copied out of the catalog
    cat.materialize(child.id, bare)
    with pytest.raises(AdapterBaseError, match=r"LoRA adapter of bert@1\.0\.0"):
        load_torch_model(bare, "text-classification", fmt="peft-adapter")
    # intact again: it loads
    load_torch_model(materialize_version(cat, child.id, tmp_path / "ok"), "text-classification", fmt="peft-adapter")


def test_target_modules_matching_nothing_are_refused_before_training(trained, tmp_path):
    cat, base, *_ = trained
    recipe = get_recipe("finetune")
    params = recipe.resolve_params({**LORA, "target_modules": "query,qkv_proj"})
    params["dataset"] = planted(40)
    ctx = JobContext(cat, workdir=tmp_path)
    with pytest.raises(RecipeError, match=r"target_modules 'qkv_proj' match no layer of bert@1\.0\.0.*query"):
        recipe.function()([lay_out(cat, base, tmp_path)], params, ctx)
    assert not ctx._points  # no training step was taken


def test_merge_refuses_a_quantised_or_foreign_base(trained, tmp_path):
    cat, base, _, child, root = trained
    _, int8 = run_recipe_commit(cat, "torch-int8-dynamic", [base], {}, tmp_path / "q")
    with pytest.raises(RecipeError, match=r"quantised version .*float base bert@1\.0\.0 and quantise"):
        run_recipe_commit(cat, "merge-adapter", [child, int8], {}, tmp_path / "m1")
    other = import_model(cat, tiny.tiny_bert_classifier(tmp_path / "other", hidden=64, intermediate=128, seed=5),
                         "bert")
    with pytest.raises(RecipeError, match=r"trained on bert@1\.0\.0 .*not on this version"):
        run_recipe_commit(cat, "merge-adapter", [child, other], {}, tmp_path / "m2")


@pytest.mark.parametrize("method,lr", [("lora", 2e-2), ("full", 2e-3)])
def test_an_encoder_becomes_a_text_classifier(catalog, tiny_bert_encoder, tmp_path, method, lr):
    enc = import_model(catalog, tiny_bert_encoder, "encoder", task="feature-extraction")
    raw = {**LORA, "method": method, "lr": lr}
    out, child = run_finetune(catalog, enc, raw, planted(200), tmp_path, model="sentiment")
    assert child.task == "text-classification" and child.model == "sentiment"
    assert child.format == ("peft-adapter" if method == "lora" else "hf")
    assert out.meta["new_head"] is True and out.meta["labels"] == ["negative", "positive"]
    folder = materialize_version(catalog, child.id, tmp_path / "eval")
    model = load_torch_model(folder, "text-classification", fmt=child.format)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    tok = load_preprocessor(folder, "text-classification")
    rows = planted(60, seed=3)
    acc = float((predict(model, tok, list(rows.texts)).argmax(-1).numpy() == rows.labels).mean())
    assert acc >= 0.8, acc
    again = load_torch_model(folder, "text-classification", fmt=child.format)  # deterministic composition
    assert torch.equal(predict(again, tok, ["a great film"]), predict(model, tok, ["a great film"]))


def test_default_targets_follow_the_architecture(tiny_bert, tiny_vit, tiny_gpt2):
    from relman.compress.adapt.lora import default_targets

    found = {task: default_targets(load_torch_model(folder, task))
             for folder, task in ((tiny_bert, "text-classification"), (tiny_vit, "image-classification"),
                                  (tiny_gpt2, "causal-lm"))}
    assert found["text-classification"] == ["query", "value"]
    assert found["causal-lm"] == ["c_attn"]
    vit = load_torch_model(tiny_vit, "image-classification")
    names = {n.rpartition(".")[2] for n, _ in vit.named_modules()}
    assert set(found["image-classification"]) <= names and len(found["image-classification"]) == 2
