"""INT4 weight-only QAT for causal LMs (recipe "qat", issue 29 item 2): on a planted LM where
post-training INT4 (int4-weight-only, rtn) loses perplexity, a few QAT steps with the rtn grid
fake-quantised recover at least half of the increase, measured through the same ONNX INT4 path
on text the model never trained on; the child is an ONNX INT4 version with the schedule in
meta.qat; bad input is refused in one line with nothing stored.

The plant (as in test_int4_lm.py): in every layer, 8 input channels of the MLP's gate and up
projections (one per block of 32) are scaled 100x and the RMSNorm weight before them divided by
100 — the float function is unchanged, but each 4-bit block holding a planted channel rounds
its other 31 weights to almost nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_int4_lm import plant_outliers

from adapter_support import lay_out
from relman.app.models import import_model
from relman.catalog import open_catalog
from relman.compress.job import commit_child
from relman.compress.registry import get_recipe
from relman.data.dataset import Dataset
from relman.errors import RecipeError
from relman.jobs.context import JobContext

pytestmark = pytest.mark.heavy


def text_dataset(n_train: int = 48, n_val: int = 16) -> Dataset:
    """Training docstrings (the kind the LM learned) and held-out ones (tkinter's, never trained on)."""
    from relman.modelio.trained_lm import heldout_documents, training_documents

    train = [d[:400] for d in training_documents()[::97] if d.strip()][:n_train]
    val = [d[:400] for d in heldout_documents() if d.strip()][:n_val]
    return Dataset(name="docstrings", kind="text", sha256="planted", texts=train + val,
                   split=np.array(["train"] * len(train) + ["validation"] * len(val), dtype=object))


def run_qat(catalog, parent, raw: dict, workdir):
    recipe = get_recipe("qat")
    data = raw.pop("dataset", None)
    params = recipe.resolve_params(raw)
    if data is not None:
        params["dataset"] = data
    ctx = JobContext(catalog, workdir=workdir)
    out = recipe.function()([lay_out(catalog, parent, workdir / "parents")], params, ctx)
    record = {**params, "dataset": getattr(data, "name", "")}
    return out, commit_child(ctx, recipe, [parent], record, out, model=None, version=None, dataset=None)


@pytest.fixture(scope="module")
def planted_lm(trained_lm_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("qat-lm")
    cat = open_catalog(root / "catalog")
    parent = import_model(cat, plant_outliers(trained_lm_dir, root / "planted"), "lm", task="causal-lm")
    yield cat, parent, root
    cat.close()


def test_int4_qat_recovers_at_least_half_of_ptq_perplexity_increase(planted_lm):
    cat, parent, root = planted_lm
    params = {"dataset": text_dataset(), "max_steps": 4, "batch_size": 8, "max_length": 64, "exporter": "relman"}
    out, child = run_qat(cat, parent, params, root / "qat")
    assert child.format == "onnx" and child.dtype == "int4"
    assert [p["parent_id"] for p in cat.parents(child.id)] == [parent.id]
    q = child.meta["qat"]
    print({k: q[k] for k in ("val_perplexity_parent_fp32", "val_perplexity_ptq_int4", "val_perplexity_qat_int4",
                             "recovered_fraction", "steps")})
    assert q["precision"] == "int4 weight-only" and q["steps"] == 4 and q["grid"] == "onnxruntime"
    assert q["prepared_linear_layers"] == 29  # 4 layers x 7 projections + the LM head: what the INT4 pass quantises
    assert child.meta["algo"] == "rtn" and child.meta["block_size"] == 32 and child.meta["symmetric"] is True
    # the planted outliers do cost post-training INT4 perplexity...
    assert q["val_perplexity_ptq_int4"] > 2.0 * q["val_perplexity_parent_fp32"]
    # ...and QAT recovers at least half of the increase, through the same ONNX INT4 path
    assert q["recovered_fraction"] >= 0.5, q
    values = cat.metric_values(child.id)
    assert values["qat_recovered_fraction"] == pytest.approx(q["recovered_fraction"])
    assert values["val_perplexity"] == pytest.approx(q["val_perplexity_qat_int4"])


def test_bad_input_is_refused_in_one_line_and_nothing_is_stored(planted_lm, tmp_path):
    cat, parent, root = planted_lm
    before = len(cat.query("SELECT id FROM versions"))
    labelled = Dataset(name="labelled", kind="sft", texts=["a b c"], completions=["d"])
    cases = (({}, "dataset"),
             ({"dataset": text_dataset(4, 2), "precision": "int8"}, "precision=int4"),
             ({"dataset": labelled}, "plain text"),
             ({"dataset": text_dataset(4, 2), "epochs": 2, "fake_quant_start": 2}, "fake_quant_start"))
    for raw, needle in cases:
        with pytest.raises(RecipeError) as err:
            run_qat(cat, parent, raw, tmp_path / "bad")
        assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert len(cat.query("SELECT id FROM versions")) == before


def test_int4_is_refused_for_a_classifier(tmp_path):
    from relman.modelio import tiny

    cat = open_catalog(tmp_path / "catalog")
    clf = import_model(cat, tiny.tiny_bert_classifier(tmp_path / "bert", hidden=64, intermediate=128), "bert")
    with pytest.raises(RecipeError, match="causal LMs") as err:
        run_qat(cat, clf, {"dataset": text_dataset(4, 2), "precision": "int4"}, tmp_path / "w")
    assert "\n" not in str(err.value)
    assert cat.query("SELECT id FROM versions WHERE id != ?", (clf.id,)) == []
    cat.close()
