"""Quantisation-aware training (recipe "qat", issue 29): on a planted model where post-training
INT8 loses accuracy, QAT recovers at least half of the loss, measured against the same PTQ path
(the ort-int8 recipe on the parent) on rows neither saw; the child is an ONNX INT8 version whose
record holds the schedule; bad input is refused in one line with nothing stored.

Planted outliers: a tiny BERT fully fine-tuned on a keyword task, then one hidden dimension of
its last LayerNorm is made huge and its pooler weights zeroed. The float model computes exactly
the same function, but that dimension sets the INT8 activation range of the pooler's input, so
every other dimension falls onto a coarse grid after PTQ.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from relman.app.models import import_model
from relman.catalog import open_catalog
from relman.compress.export.onnx_export import ONNX_FILE
from relman.compress.quantize.qat import onnx_accuracy
from relman.errors import RecipeError
from relman.modelio import tiny
from relman.modelio.loading import load_torch_model, materialize_version

from adapter_support import lay_out, planted, run_finetune, run_recipe_commit
from relman.compress.job import commit_child
from relman.compress.registry import get_recipe
from relman.jobs.context import JobContext


def run_qat(catalog, parent, raw: dict, workdir: Path):
    """The qat recipe on `parent` with an in-memory dataset, committed as the compress job does."""
    recipe = get_recipe("qat")
    data = raw.pop("dataset", None)
    params = recipe.resolve_params(raw)
    if data is not None:
        params["dataset"] = data
    ctx = JobContext(catalog, workdir=workdir)
    out = recipe.function()([lay_out(catalog, parent, workdir / "parents")], params, ctx)
    record = {**params, "dataset": getattr(data, "name", "")}
    return out, commit_child(ctx, recipe, [parent], record, out, model=None, version=None, dataset=None)

OUTLIER = 1000.0


def plant_outliers(folder: Path, out: Path) -> Path:
    """The model at `folder` with one function-preserving activation outlier at the pooler's
    input: a hidden dimension of the last LayerNorm scaled and shifted by OUTLIER, whose pooler
    weights are zeroed (in a sequence classifier the last hidden state feeds only the pooler)."""
    model = load_torch_model(folder, "text-classification")
    with torch.no_grad():
        norm = model.bert.encoder.layer[-1].output.LayerNorm
        k = int(model.bert.pooler.dense.weight.abs().sum(0).argmin())
        norm.weight[k] = OUTLIER
        norm.bias[k] = OUTLIER
        model.bert.pooler.dense.weight[:, k] = 0.0
    model.save_pretrained(out)
    for f in folder.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special_tokens")):
            (out / f.name).write_bytes(f.read_bytes())
    return out


@pytest.fixture(scope="module")
def planted_parent(tmp_path_factory):
    root = tmp_path_factory.mktemp("qat")
    cat = open_catalog(root / "catalog")
    base = import_model(cat, tiny.tiny_bert_classifier(root / "bert", hidden=64, intermediate=128), "bert")
    _, trained = run_finetune(cat, base, {"method": "full", "lr": 1e-3, "epochs": 4}, planted(240), root / "ft")
    folder = plant_outliers(materialize_version(cat, trained.id, root / "trained"), root / "planted")
    parent = import_model(cat, folder, "planted", task="text-classification")
    yield cat, parent, root
    cat.close()


def test_qat_recovers_at_least_half_of_ptq_loss(planted_parent):
    cat, parent, root = planted_parent
    held_out = planted(200, seed=11)  # rows neither training nor validation saw
    params = {"dataset": planted(240, seed=5), "epochs": 4, "lr": 3e-3, "compare_ptq": True}
    _, ptq = run_recipe_commit(cat, "ort-int8", [parent], {"per_channel": True}, root / "ptq")
    out, child = run_qat(cat, parent, params, root / "qat")
    assert child.format == "onnx" and child.dtype == "int8"
    assert [p["parent_id"] for p in cat.parents(child.id)] == [parent.id]
    schedule = child.meta["qat"]
    assert schedule["epochs"] == 4 and schedule["fake_quant_start_epoch"] == 1 and "freeze_observers" in schedule

    def acc(version) -> float:
        folder = materialize_version(cat, version.id, root / f"eval-{version.id}")
        path = folder / ONNX_FILE if version.format == "onnx" else None
        if path is None:
            from relman.compress.export.onnx_export import onnx_source

            path, _ = onnx_source(folder, "hf", "text-classification", root / "fp32", tolerance=1e-3)
        return onnx_accuracy(path, folder, "text-classification", held_out, 64)

    fp32, ptq_acc, qat_acc = acc(parent), acc(ptq), acc(child)
    print(f"held-out accuracy: fp32 {fp32:.3f}, PTQ INT8 {ptq_acc:.3f}, QAT INT8 {qat_acc:.3f}; "
          f"recipe validation: {schedule.get('val_accuracy_ptq_int8')} -> {schedule.get('val_accuracy_qat_int8')}")
    lost = fp32 - ptq_acc
    assert lost >= 0.1, (fp32, ptq_acc)  # the planted outliers do cost PTQ accuracy
    assert (qat_acc - ptq_acc) / lost >= 0.5, (fp32, ptq_acc, qat_acc)


def test_bad_input_is_refused_in_one_line_and_nothing_is_stored(planted_parent):
    cat, parent, root = planted_parent
    before = len(cat.query("SELECT id FROM versions"))
    for raw, needle in (({}, "dataset"), ({"dataset": planted(40), "epochs": 2, "fake_quant_start": 2}, "fake_quant_start")):
        with pytest.raises(RecipeError) as err:
            run_qat(cat, parent, raw, root / "bad")
        assert needle in str(err.value) and "\n" not in str(err.value)
    assert len(cat.query("SELECT id FROM versions")) == before
