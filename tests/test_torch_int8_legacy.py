"""A catalog holding a torch-int8 version in the old torch.ao layout (written here by the old
writer, tests/torch_int8_legacy.py) still loads it with the same kernels, evaluates it, exports
it as a bundle that another catalog imports and loads, and lists it for the recipes that read
the format; new versions are written in torchao's plain-tensor layout beside it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from explain_support import planted_text_rows, text_dataset, train_text_classifier, write_csv
from torch_int8_legacy import write_legacy_int8

pytestmark = pytest.mark.heavy  # trains a tiny model, runs the compress and evaluate jobs

TASK = "text-classification"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny BERT that learned the planted word, and held-out rows."""
    root = tmp_path_factory.mktemp("legacy-int8")
    folder = train_text_classifier(root / "m", planted_text_rows(240, seed=0))
    return folder, planted_text_rows(60, seed=7)


def legacy_child(catalog, tmp_path, parent_folder):
    """The parent and an old-format child committed as the old recipe did (same recipe record)."""
    from relman.app.models import import_model
    from relman.compress.job import commit_child
    from relman.compress.registry import RecipeOutput, get_recipe
    from relman.jobs.context import JobContext

    parent = import_model(catalog, parent_folder, "p")
    out = tmp_path / "legacy"
    old_model = write_legacy_int8(parent_folder, TASK, out, ["classifier"])
    recipe = get_recipe("torch-int8-dynamic")
    ctx = JobContext(catalog, workdir=tmp_path / "work")
    try:
        child = commit_child(ctx, recipe, [parent], {"keep_float": ["classifier"]},
                             RecipeOutput(folder=out, format="torch-int8", dtype="int8"),
                             model=None, version=None, dataset=None)
    finally:
        ctx.cleanup()
    return parent, child, old_model


def logits(model, folder, texts):
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return model(**enc).logits.float().numpy()


def test_an_old_format_version_loads_evaluates_and_exports(catalog, tmp_path, trained):
    import torch

    from relman.app.bundles import create_key, export_bundle, import_bundle
    from relman.app.datasets import register_dataset
    from relman.catalog import open_catalog
    from relman.evaluate.job import run as evaluate
    from relman.jobs.context import JobContext
    from relman.modelio.loading import load_torch_model, materialize_version
    from relman.modelio.torch_int8 import is_legacy

    folder, held_out = trained
    parent, child, old_model = legacy_child(catalog, tmp_path, folder)
    assert child.format == "torch-int8"
    laid = materialize_version(catalog, child.id, tmp_path / "laid")
    assert is_legacy(laid) and "layout" not in json.loads((laid / "relman_int8.json").read_text())
    texts = [t for t, _ in held_out]

    # loads: the same torch.ao kernels, so exactly the outputs the old code produced
    loaded = load_torch_model(laid, TASK, "cpu", fmt="torch-int8")
    assert isinstance(dict(loaded.named_modules())["bert.encoder.layer.0.attention.self.query"],
                      torch.ao.nn.quantized.dynamic.Linear)
    want = logits(old_model, folder, texts)
    assert np.array_equal(logits(loaded, folder, texts), want)

    # evaluates: the quality suite's accuracy is the old model's own on the planted rows
    register_dataset(catalog, write_csv(tmp_path / "d.csv", held_out), "planted")
    ds = text_dataset(held_out)
    expected = float(np.mean(want.argmax(1) == ds.labels))
    assert expected >= 0.9  # the planted word survived INT8: a real model, not noise
    ctx = JobContext(catalog, device="cpu")
    try:
        evaluate({"version_id": child.id, "dataset": "planted", "suites": ["quality", "fidelity"],
                  "parent_version_id": parent.id, "threads": 1}, ctx)
    finally:
        ctx.cleanup()
    values = catalog.metric_values(child.id)
    assert values["accuracy"] == pytest.approx(expected)
    assert values["fidelity"] >= 0.9

    # exports: a signed bundle another catalog imports, whose copy loads to the same outputs
    create_key("lab")
    bundles = [export_bundle(catalog, v.ref, tmp_path / f"{v.id}.relman", key="lab")["path"] for v in (parent, child)]
    other = open_catalog(tmp_path / "other")
    try:
        for b in bundles:
            import_bundle(other, b)
        [copy] = [v for v in other.versions() if v.format == "torch-int8"]
        again = load_torch_model(materialize_version(other, copy.id, tmp_path / "again"), TASK, "cpu",
                                 fmt="torch-int8")
        assert np.array_equal(logits(again, folder, texts), want)
    finally:
        other.close()


def test_a_new_child_of_the_same_parent_is_plain_tensors_and_closer_to_it(catalog, tmp_path, trained):
    """Beside the old version, today's recipe writes safetensors only (no pickle, no qint8),
    and its per-row weights / per-token activations follow the parent at least as closely."""
    from safetensors import safe_open

    from explain_support import compress_child_version
    from relman.modelio.loading import load_torch_model, materialize_version

    folder, held_out = trained
    parent, old, old_model = legacy_child(catalog, tmp_path, folder)
    new = compress_child_version(catalog, parent.id, "torch-int8-dynamic", {"keep_float": "classifier"})
    laid = materialize_version(catalog, new.id, tmp_path / "new")
    names = sorted(p.name for p in laid.iterdir())
    assert "int8_weights.safetensors" in names and "quantized_state_dict.pt" not in names
    assert not [n for n in names if n.endswith((".pt", ".bin", ".pkl"))]
    spec = json.loads((laid / "relman_int8.json").read_text())
    assert spec["layout"] == "int8-rowwise-v1" and spec["activations"] == "dynamic"
    with safe_open(str(laid / "int8_weights.safetensors"), "pt") as f:
        key = "bert.encoder.layer.0.attention.self.query.weight"
        assert str(f.get_slice(key + ".qdata").get_dtype()) == "I8"
        assert f.get_slice(key + ".scale").get_shape()[1] == 1
    texts = [t for t, _ in held_out]
    fp32 = logits(load_torch_model(folder, TASK, "cpu"), folder, texts)
    new_out = logits(load_torch_model(laid, TASK, "cpu", fmt="torch-int8"), folder, texts)
    old_out = logits(old_model, folder, texts)
    assert np.abs(new_out - fp32).max() <= np.abs(old_out - fp32).max() + 1e-3
    assert (new_out.argmax(1) == fp32.argmax(1)).mean() >= 0.95


def test_a_torch_int8_version_is_not_written_as_a_hugging_face_folder(catalog, tmp_path, trained):
    """Its safetensors file is relman's int8 layout, which transformers cannot load: `export
    --format hf` refuses it in one line and writes nothing (as it did for the .pt layout)."""
    from explain_support import compress_child_version
    from relman.app.bundles import export_folder
    from relman.errors import RelmanError

    folder, _ = trained
    from relman.app.models import import_model

    parent = import_model(catalog, folder, "p")
    new = compress_child_version(catalog, parent.id, "torch-int8-dynamic")
    with pytest.raises(RelmanError, match="torch-int8") as err:
        export_folder(catalog, new.ref, tmp_path / "hf", "hf")
    assert "\n" not in str(err.value) and not (tmp_path / "hf").exists()
