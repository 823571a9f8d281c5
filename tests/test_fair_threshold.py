"""The `fair-threshold` recipe on a planted case: a classifier whose positive rate differs by group.

The parent is the tiny BERT with its head's bias set so that half of a pool of generated
sentences scores positive. Group A is drawn mostly from the positive-scoring half, group B
mostly from the other; each row's label is positive when its score is above its own group's
median (the model ranks rows right within a group, but its threshold is off by a group-
dependent amount: the bias per-group thresholds are made for). Fitted on the train split,
evaluated on the test split, the child must cut the demographic-parity difference by at least
half, with the accuracy change inside its paired interval and not a significant loss.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.recipe_support import compress_job, evaluate_job


def _planted_parent_and_rows(tiny_bert: Path, folder: Path, n_pool: int = 1400, seed: int = 0):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from relman.modelio.tiny import _WORDS

    rng = np.random.default_rng(seed)
    pool = list(dict.fromkeys(" ".join(rng.choice(_WORDS, size=int(rng.integers(4, 9)))) for _ in range(n_pool)))
    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert)).eval()
    with torch.no_grad():
        logits = model(**tok(pool, padding=True, return_tensors="pt")).logits.numpy()
    margin = logits[:, 1] - logits[:, 0]
    centre = float(np.median(margin))
    with torch.no_grad():  # the parent: half the pool scores positive
        model.classifier.bias[1] -= centre
    shutil.copytree(tiny_bert, folder)
    model.save_pretrained(str(folder))
    margin = margin - centre
    high, low = np.flatnonzero(margin > 0), np.flatnonzero(margin < 0)
    rng.shuffle(high)
    rng.shuffle(low)
    per = min(len(high), len(low)) // 2
    k = int(per * 0.8)
    rows = []
    for group, idx in (("a", np.r_[high[:k], low[:per - k]]), ("b", np.r_[low[per:per + k], high[per:2 * per - k]])):
        med = np.median(margin[idx])
        for i in idx:
            rows.append((pool[i], "positive" if margin[i] > med else "negative", group))
    order = rng.permutation(len(rows))
    return folder, [rows[i] + ("train" if j % 2 == 0 else "test",) for j, i in enumerate(order)]


def _write(path: Path, rows, group: bool = True) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label", "group", "split"] if group else ["text", "label", "split"])
        for text, label, g, split in rows:
            w.writerow([text, label, g, split] if group else [text, label, split])
    return path


def _metrics(catalog, version_id: int) -> dict[str, dict]:
    return {(m["suite"], m["name"]): m for m in catalog.metrics(version_id)}


def test_thresholds_cut_the_parity_gap_in_every_suite_and_in_the_shipped_reader(catalog, tiny_bert, tmp_path):
    from relman.app.datasets import register_dataset
    from relman.app.models import import_model
    from relman.compress import job
    from relman.compress.registry import get_recipe
    from relman.data import load_dataset
    from relman.errors import RecipeError
    from relman.jobs.context import JobContext
    from relman.modelio import postprocessor as pp
    from relman.modelio.loading import materialize_version
    from relman.release.modelcard import render_card
    from relman.tasks import open_runner

    folder, rows = _planted_parent_and_rows(tiny_bert, tmp_path / "parent")
    register_dataset(catalog, _write(tmp_path / "planted.csv", rows), "planted", group_col="group", split_col="split")
    parent = import_model(catalog, folder, "clf")
    ctx = JobContext(catalog)
    try:  # the compress job's body, evaluation queued as it is for any child (no worker runs it here)
        result = job.run({"recipe": "fair-threshold", "params": {"constraint": "demographic_parity"},
                          "parent_version_ids": [parent.id], "dataset": "planted"}, ctx)
    finally:
        ctx.cleanup()
    child = catalog.get_version(result["version_id"])
    queued = json.loads(catalog.query("SELECT params FROM jobs WHERE id = ?", [result["evaluation_job"]])[0]["params"])
    assert {"quality", "fairness"} <= set(queued["suites"])  # its standard evaluation shows the gap too
    # a versioned child: lineage, the recipe's parameters, a JSON rule pinned to the parent
    assert child.format == pp.FORMAT and child.task == "text-classification"
    assert catalog.parents(child.id)[0]["parent_id"] == parent.id
    assert catalog.parents(child.id)[0]["relation"] == "fair-threshold"
    assert child.recipe["params"]["constraint"] == "demographic_parity" and child.recipe["dataset"] == "planted"
    assert {a["path"] for a in catalog.artifacts(child.id)} == {pp.RULE, pp.READER}
    rule = pp.read_rule(materialize_version(catalog, child.id, tmp_path / "lay"))
    assert rule["parent"]["manifest_sha256"] == parent.manifest_sha256 and set(rule["groups"]) == {"a", "b"}
    assert rule["fitted_on"]["split"] == "train"
    # the standard evaluation, out of sample (test split), with the parent as the paired reference
    for v in (parent, child):
        evaluate_job(catalog, v.id, dataset="planted", suites=["quality", "fairness", "robustness"],
                     options={"split": "test", "eval_batch_size": 64})
    got, before = _metrics(catalog, child.id), _metrics(catalog, parent.id)
    dp_parent = before[("fairness", "demographic_parity_diff")]["value"]
    dp_child = got[("fairness", "demographic_parity_diff")]["value"]
    assert dp_parent >= 0.4, "the planted parent must be strongly unequal"
    assert dp_child <= 0.5 * dp_parent, (dp_parent, dp_child)
    delta = got[("fairness", "demographic_parity_diff_delta_vs_parent")]
    assert delta["value"] == pytest.approx(dp_child - dp_parent)
    assert delta["context"]["reference_value"] == pytest.approx(dp_parent)  # the parent's gap, same rows
    lo, hi = delta["context"]["interval"]
    assert lo <= delta["value"] <= hi < 0  # the cut is beyond its paired interval's noise
    r_lo, r_hi = delta["context"]["reference_interval"]
    c_lo, c_hi = got[("fairness", "demographic_parity_diff")]["context"]["interval"]
    assert r_lo <= dp_parent <= r_hi and c_lo <= dp_child <= c_hi and c_hi < r_lo  # before and after apart
    acc = got[("quality", "accuracy_delta_vs_parent")]
    a_lo, a_hi = acc["context"]["interval"]
    assert a_lo <= acc["value"] <= a_hi and a_hi >= 0, acc  # the accuracy change: inside its interval, no loss
    assert ("robustness", "robust_accuracy") in got  # robustness scored the post-processed decisions too
    # the decisions every suite saw are the rule's: recompute them from the parent's scores
    test = load_dataset(catalog, "planted").subset("test")
    lay = tmp_path / "runners"
    pr = open_runner(materialize_version(catalog, parent.id, lay), parent.format, parent.task, "cpu")
    cr = open_runner(materialize_version(catalog, child.id, lay), child.format, child.task, "cpu")
    scores = pp.softmax_positive(pr.predict_dataset(test, 64), 1)
    decided = cr.predict_dataset(test, 17).argmax(axis=1)  # another batch size: the same decisions
    y = cr.model_labels_for(test)
    assert got[("quality", "accuracy")]["value"] == pytest.approx(float(np.mean(decided == y)))
    # ... and the reader shipped in the version's files agrees row by row (it is our own file)
    namespace: dict = {}
    exec(compile((materialize_version(catalog, child.id, lay) / pp.READER).read_text(), pp.READER, "exec"), namespace)
    shipped = [namespace["decide"](rule, float(s), g, t.encode()) for s, g, t in zip(scores, test.groups, test.texts)]
    assert shipped == decided.tolist()
    # the card says the group attribute is needed at prediction time
    assert "group attribute is needed at prediction time" in render_card(catalog, catalog.get_version(child.id))
    # ONNX export refuses the rule (not a graph); a dataset without groups cannot be decided
    with pytest.raises(RecipeError, match="its format is 'fair-threshold'"):
        get_recipe("onnx-export").check_parents([catalog.get_version(child.id)])
    no_groups = test.take(np.arange(4))
    no_groups.groups = None
    with pytest.raises(Exception, match="has no group column, and the group attribute is needed at prediction"):
        cr.predict_dataset(no_groups, 4)
    _bundle_round_trip(catalog, parent, catalog.get_version(child.id), test, decided, tmp_path)


def test_no_group_column_is_refused_in_one_line_and_nothing_is_stored(catalog, tiny_bert, tmp_path, run_cli):
    from relman.app.datasets import register_dataset
    from relman.app.models import import_model
    from relman.errors import RecipeError

    rows = [(f"good movie {i}", "positive" if i % 2 else "negative", "a", "train") for i in range(8)]
    register_dataset(catalog, _write(tmp_path / "flat.csv", rows, group=False), "flat", split_col="split")
    parent = import_model(catalog, tiny_bert, "clf")
    versions = catalog.query("SELECT COUNT(*) AS n FROM versions")[0]["n"]
    blobs = sorted(p.name for p in Path(catalog.root).rglob("*") if p.is_file() and "blobs" in p.parts)
    with pytest.raises(RecipeError) as err:
        compress_job(catalog, parent.id, "fair-threshold", dataset="flat")
    assert str(err.value) == ("fair-threshold needs a group column, but dataset 'flat' has none (register it with a "
                              "group column, e.g. --map group_col=COLUMN)")
    with pytest.raises(RecipeError, match="fair-threshold needs a labelled dataset with a group column"):
        compress_job(catalog, parent.id, "fair-threshold")
    # the CLI refuses before queueing: no job, no version
    res = run_cli("compress", parent.ref, "fair-threshold", "--dataset", "flat")
    assert res.exit_code == 1 and res.output.strip().splitlines() == [f"error: {err.value}"], res.output
    res = run_cli("compress", parent.ref, "fair-threshold")
    assert res.exit_code == 1 and "needs a labelled dataset with a group column" in res.output
    assert catalog.query("SELECT COUNT(*) AS n FROM jobs")[0]["n"] == 0
    assert catalog.query("SELECT COUNT(*) AS n FROM versions")[0]["n"] == versions
    assert sorted(p.name for p in Path(catalog.root).rglob("*") if p.is_file() and "blobs" in p.parts) == blobs


def test_a_hand_edited_rule_is_refused(tmp_path):
    from relman.errors import ModelImportError
    from relman.modelio import postprocessor as pp

    good = {"kind": pp.KIND, "format_version": 1, "labels": ["n", "p"], "positive_index": 1, "seed": 0,
            "groups": {"a": {"p0": 1.0, "p1": 0.0, "operation0": {"operator": ">", "threshold": 0.4},
                             "operation1": {"operator": ">", "threshold": 0.4}}},
            "parent": {"version_id": 1, "ref": "m@1.0.0", "manifest_sha256": "0" * 64, "format": "hf"}}
    assert pp.check_rule(json.loads(json.dumps(good)), "x")["groups"]["a"]["p0"] == 1.0
    bad = json.loads(json.dumps(good))
    bad["groups"]["a"]["operation0"]["operator"] = "__import__('os')"
    with pytest.raises(ModelImportError, match="the thresholds of group 'a' are malformed"):
        pp.check_rule(bad, "x")
    decided = pp.decide(good, np.log(np.array([[0.7, 0.3], [0.5, 0.5]])), np.array(["a", "a"]), np.zeros(2))
    assert decided.tolist() == [0, 1]
    with pytest.raises(Exception, match="rows of group 'z' cannot be decided"):
        pp.decide(good, np.zeros((1, 2)), np.array(["z"]), np.zeros(1))


def _bundle_round_trip(catalog, parent, child, test, decided, tmp_path) -> None:
    """A bundle carries the rule and its reader; in another catalog the child decides exactly as
    here once its pinned parent is there too, and names that parent while it is not."""
    import tarfile

    from relman.app import bundles
    from relman.catalog import open_catalog
    from relman.errors import AdapterBaseError
    from relman.modelio import postprocessor as pp
    from relman.modelio.loading import materialize_version
    from relman.tasks import open_runner

    bundles.create_key("lab-a")
    b_parent = bundles.export_bundle(catalog, parent.ref, tmp_path / "parent.relman", key="lab-a")
    b_child = bundles.export_bundle(catalog, child.ref, tmp_path / "child.relman", key="lab-a")
    with tarfile.open(b_child["path"]) as tf:
        names = tf.getnames()
    assert f"artifacts/{pp.RULE}" in names and f"artifacts/{pp.READER}" in names
    target = open_catalog(tmp_path / "target")
    try:
        bundles.import_bundle(target, b_child["path"])
        tc = target.resolve(child.ref)
        with pytest.raises(AdapterBaseError, match=f"applies per-group thresholds to {parent.ref} .*import that parent"):
            materialize_version(target, tc.id, tmp_path / "there-0")
        bundles.import_bundle(target, b_parent["path"])
        tr = open_runner(materialize_version(target, tc.id, tmp_path / "there"), tc.format, tc.task, "cpu")
        assert tr.predict_dataset(test, 64).argmax(axis=1).tolist() == decided.tolist()
    finally:
        target.close()
