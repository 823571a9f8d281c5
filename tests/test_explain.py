"""Explanations on tiny models trained here on planted signals: the explainers must find the
planted feature, pass the model-randomisation sanity check, explain ONNX / INT8 children by
perturbation (and refuse gradients for them), be more faithful than random attributions, and
refuse bad requests with one line while storing nothing."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from explain_support import (DECISIVE, LABELS, accuracy, image_dataset, planted_images, planted_text_rows,
                             text_dataset, train_image_classifier, train_text_classifier, write_csv)
from relman.errors import EvaluationError

pytestmark = pytest.mark.heavy  # trains tiny models, runs Captum, a worker

# Graded planted signal: every sentiment word moves the label by its weight, neutral words by
# nothing, so a trained model's attributions have a real order for a child to keep or lose.
WEIGHTS = {"great": 2, "love": 2, "good": 1, "fun": 1, "awful": -2, "hate": -2, "bad": -1, "boring": -1}
NEUTRAL = ["the", "a", "movie", "film", "plot", "actor"]


def weighted_rows(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        words = [rng.choice(list(WEIGHTS) + NEUTRAL) for _ in range(rng.randint(5, 8))]
        s = sum(WEIGHTS.get(w, 0) for w in words)
        if s:
            out.append((" ".join(words), LABELS[int(s > 0)]))
    return out


def explain(folder: Path, ds, method: str, fmt: str = "hf", task: str = "text-classification", n: int | None = None,
            faithfulness: bool = False):
    from relman.evaluate.explain.attribute import Explainer
    from relman.tasks import open_runner

    runner = open_runner(folder, fmt, task, "cpu", 1)
    return Explainer(runner, method).explain(ds, list(range(n or len(ds))), faithfulness=faithfulness)


def argmax_names(examples) -> list[str]:
    return [e["features"][int(np.argmax([abs(f["score"]) for f in e["features"]]))]["name"] for e in examples]


def mean_rho(a, b) -> float:
    from relman.evaluate.explain.compare import compare_examples, nanmean

    return nanmean([r["rho"] for r in compare_examples(a, b)])


@pytest.fixture(scope="module")
def planted_text(tmp_path_factory) -> Path:
    return train_text_classifier(tmp_path_factory.mktemp("planted-text") / "m", planted_text_rows(240, seed=0))


@pytest.fixture(scope="module")
def weighted_text(tmp_path_factory) -> Path:
    return train_text_classifier(tmp_path_factory.mktemp("weighted-text") / "m", weighted_rows(300, seed=0),
                                 epochs=8, hidden=64)


# -- planted signal --------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["ig", "occlusion"])
def test_the_planted_token_gets_the_largest_attribution(planted_text, method):
    rows = planted_text_rows(60, seed=1)
    assert accuracy(planted_text, text_dataset(rows), "text-classification") >= 0.95
    rows = [r for r in rows if r[1] in DECISIVE]  # the rows that hold the planted word
    top = argmax_names(explain(planted_text, text_dataset(rows), method))
    hits = np.mean([t == DECISIVE[label] for t, (_, label) in zip(top, rows)])
    assert hits >= 0.9, (method, hits, top)


def test_the_planted_bright_patch_gets_the_largest_attribution(tmp_path):
    images, labels, _ = planted_images(400, seed=0)
    folder = train_image_classifier(tmp_path / "vit", images, labels)
    test_images, test_labels, where = planted_images(40, seed=1)
    ds = image_dataset(test_images, test_labels)
    assert accuracy(folder, ds, "image-classification") >= 0.95
    with_patch = [i for i, w in enumerate(where) if w is not None]
    ds = ds.take(with_patch)
    for method in ("ig", "occlusion"):
        examples = explain(folder, ds, method, task="image-classification")
        assert examples[0]["grid"] == [4, 4] and len(examples[0]["features"]) == 16
        top = [int(np.argmax([abs(f["score"]) for f in e["features"]])) for e in examples]
        hits = np.mean([t == where[i][0] * 4 + where[i][1] for t, i in zip(top, with_patch)])
        assert hits >= 0.9, (method, hits)


def test_ig_attributions_are_more_comprehensive_than_random_ones(planted_text):
    from relman.evaluate.explain.attribute import Explainer
    from relman.tasks import open_runner

    ds = text_dataset([r for r in planted_text_rows(40, seed=2) if r[1] in DECISIVE])
    ex = Explainer(open_runner(planted_text, "hf", "text-classification", "cpu", 1), "ig")
    rng = np.random.default_rng(0)
    ig_comp, rnd_comp, ig_suff, rnd_suff = [], [], [], []
    for i in range(len(ds)):
        prep = ex.prepare(ds, i)
        c, s = ex.aopc(prep, ex.attribute(prep))
        rc, rs = ex.aopc(prep, rng.normal(size=prep.n_features))
        ig_comp.append(c), rnd_comp.append(rc), ig_suff.append(s), rnd_suff.append(rs)
    assert np.mean(ig_comp) > np.mean(rnd_comp) + 1.0, (np.mean(ig_comp), np.mean(rnd_comp))
    assert np.mean(ig_suff) < np.mean(rnd_suff)


@pytest.mark.parametrize("fixture, task", [("tiny_bert", "text-classification"),
                                           ("tiny_bert_encoder", "feature-extraction"),
                                           ("tiny_gpt2", "causal-lm"), ("tiny_vit", "image-classification")])
def test_ig_is_complete_and_every_method_explains_every_task(request, fixture, task):
    """Integrated Gradients' completeness axiom: the attributions add up to the explained score
    minus its value with every feature removed (which the forward-only path computes)."""
    from relman.data.demo import digits
    from relman.data.dataset import Dataset
    from relman.evaluate.explain.attribute import Explainer
    from relman.tasks import open_runner

    runner = open_runner(request.getfixturevalue(fixture), "hf", task, "cpu", 1)
    ds = digits(3) if task == "image-classification" else Dataset(
        name="t", kind="text", sha256="t", texts=["the movie was great", "a bad plot and a fine actor"])
    ex = Explainer(runner, "ig", ig_steps=64)
    for i in range(2):
        prep = ex.prepare(ds, i)
        total = ex.attribute(prep).sum()
        gap = prep.base_score - ex.score_presence(prep, np.zeros((1, prep.n_features)))[0]
        assert abs(total - gap) <= 0.03 * abs(gap) + 1e-3, (total, gap)
    for method in ("occlusion", "shap"):
        got = Explainer(runner, method, shap_samples=32).explain(ds, [0, 1])
        assert all(len(e["features"]) > 0 and np.isfinite(e["comprehensiveness"]) for e in got)


# -- model randomisation (Adebayo et al., 2018) ------------------------------------------------
def test_model_randomisation_sanity_check(weighted_text, catalog, tmp_path):
    from relman.app.models import import_model
    from relman.modelio import tiny
    from explain_support import compress_child

    ds = text_dataset(weighted_rows(24, seed=1))
    reinit = tiny.tiny_bert_classifier(tmp_path / "reinit", LABELS, seed=1, hidden=64, intermediate=128)
    trained_ig = explain(weighted_text, ds, "ig")
    assert mean_rho(trained_ig, explain(reinit, ds, "ig")) <= 0.5
    parent = import_model(catalog, weighted_text, "w")
    int8 = compress_child(catalog, parent.id, "torch-int8-dynamic", tmp_path)
    trained_occ = explain(weighted_text, ds, "occlusion")
    assert mean_rho(trained_occ, explain(reinit, ds, "occlusion")) <= 0.5
    assert mean_rho(trained_occ, explain(int8, ds, "occlusion", fmt="torch-int8")) >= 0.7


def test_gradients_are_refused_for_versions_without_them(weighted_text, catalog, tmp_path):
    from relman.app.explain import resolve_method
    from relman.app.models import import_model
    from relman.evaluate.explain.attribute import Explainer
    from relman.tasks import open_runner
    from explain_support import compress_child

    parent = import_model(catalog, weighted_text, "w")
    for recipe, fmt in (("onnx-export", "onnx"), ("torch-int8-dynamic", "torch-int8")):
        folder = compress_child(catalog, parent.id, recipe, tmp_path)
        runner = open_runner(folder, fmt, "text-classification", "cpu", 1)
        with pytest.raises(EvaluationError, match=r"needs gradients.*--method occlusion \(or shap\)"):
            Explainer(runner, "ig", ref=f"w ({fmt})")
        with pytest.raises(EvaluationError, match="--method occlusion"):
            resolve_method(fmt, "ig", "w")
        assert resolve_method(fmt, "auto", "w") == "occlusion"
        ds = text_dataset(weighted_rows(3, seed=5))
        for method in ("occlusion", "shap"):
            got = Explainer(runner, method).explain(ds, [0, 1, 2])
            assert [len(e["features"]) for e in got] == [len(t.split()) for t in ds.texts]
            assert all(np.isfinite(f["score"]) for e in got for f in e["features"])


# -- the suite, the job, the CLI, gates and cards ----------------------------------------------
@pytest.fixture
def family(catalog, weighted_text, tmp_path):
    """A trained parent, its ONNX child, and the planted text data registered."""
    from relman.app.datasets import register_dataset
    from relman.app.models import import_model
    from explain_support import compress_child_version

    parent = import_model(catalog, weighted_text, "w")
    onnx = compress_child_version(catalog, parent.id, "onnx-export")
    register_dataset(catalog, write_csv(tmp_path / "w.csv", weighted_rows(40, seed=3)), "wtext")
    return parent, onnx


def run_evaluate(catalog, version_id: int, **params):
    from relman.evaluate.job import run
    from relman.jobs.context import JobContext

    ctx = JobContext(catalog, device="cpu")
    try:
        return run({"version_id": version_id, "threads": 1, **params}, ctx)
    finally:
        ctx.cleanup()


def test_explain_suite_stores_agreement_faithfulness_and_attributions(catalog, family):
    from relman.app.evaluate import plan_evaluation
    from relman.app.explain import latest_attributions
    from relman.release.gates import evaluate_gates
    from relman.release.modelcard import render_card
    from relman.release.policy import default_policy

    parent, onnx = family
    plan = plan_evaluation(catalog, [onnx.ref], dataset="wtext", suites=["explain"],
                           options={"explain_examples": "6"})[0]
    assert plan["parent_version_id"] == parent.id
    run_evaluate(catalog, onnx.id, **{k: v for k, v in plan.items() if k != "version_id"})
    vals = catalog.metric_values(onnx.id)
    m = {r["name"]: r for r in catalog.metrics(onnx.id)}
    assert m["explain_agreement_vs_parent"]["context"]["method"] == "occlusion"  # the ONNX child has no gradients
    assert vals["explain_agreement_vs_parent"] >= 0.8  # an exact export decides for the same reasons
    assert vals["explain_prediction_agreement_vs_parent"] == 1.0 and vals["explain_flips"] == 0
    assert vals["explain_comprehensiveness"] > 0 and 0 <= vals["explain_topk_overlap_vs_parent"] <= 1
    # attributions of the child and of its parent are stored, referenced and hash-checked
    doc = latest_attributions(catalog, onnx.id)
    pdoc = latest_attributions(catalog, parent.id)
    assert doc["compared_with"] == parent.ref and len(doc["examples"]) == 6 == len(doc["comparison"])
    assert [e["index"] for e in doc["examples"]] == [e["index"] for e in pdoc["examples"]]
    assert catalog.orphan_blobs() == [] and catalog.verify_store() == []
    # gates read the metric by name
    policy = default_policy()
    policy["gates"]["candidate"] = ["explain_agreement_vs_parent >= 0.8"]
    assert evaluate_gates(catalog, onnx, "candidate", policy=policy).passed
    policy["gates"]["candidate"] = ["explain_agreement_vs_parent >= 1.01"]
    report = evaluate_gates(catalog, onnx, "candidate", policy=policy)
    assert not report.passed and "explain_agreement_vs_parent" in report.failing_text()
    policy["gates"]["candidate"] = ["explain_agreement_vs_parent >= 0.8"]
    root = evaluate_gates(catalog, parent, "candidate", policy=policy)  # a root has no parent to agree with
    assert [r.status for r in root.rules] == ["skipped"] and "has no parent version" in root.rules[0].reason
    files = {a["path"]: catalog.store.path(a["sha256"]) for a in catalog.artifacts(parent.id)}
    other = catalog.add_version(parent.model, files, format=parent.format, task=parent.task,
                                parents=[(parent.id, None)])
    assert not evaluate_gates(catalog, other, "candidate", policy=policy).passed  # never explained: fails
    card = render_card(catalog, onnx)
    assert "## Explainability" in card and "Agreement with the parent" in card and "#" + str(
        doc["examples"][0]["index"]) + ":" in card


def test_an_edited_attributions_blob_is_noticed(catalog, family):
    import os

    from relman.app.explain import latest_attributions
    from relman.errors import IntegrityError

    parent, _ = family
    run_evaluate(catalog, parent.id, dataset="wtext", suites=["explain"], options={"explain_examples": 2})
    sha = catalog.evaluation_artifacts(parent.id)[-1]["sha256"]
    path = catalog.store.path(sha)
    os.chmod(path, 0o644)
    path.write_text(path.read_text().replace('"prediction"', '"prediction" '))
    with pytest.raises(IntegrityError, match="does not match its hash"):
        latest_attributions(catalog, parent.id)
    assert any("explain attributions" in p for p in catalog.verify_store())


def test_ig_on_an_onnx_child_fails_the_job_and_stores_nothing(catalog, family):
    parent, onnx = family
    before = catalog.conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
    with pytest.raises(EvaluationError, match="--method occlusion"):
        run_evaluate(catalog, onnx.id, dataset="wtext", suites=["explain"],
                     options={"explain_method": "ig", "explain_examples": 2}, parent_version_id=parent.id)
    assert catalog.conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == before
    assert catalog.evaluation_artifacts(onnx.id) == [] and catalog.orphan_blobs() == []


def test_cli_explain_runs_a_job_prints_json_in_input_order_then_reuses_it(run_cli, catalog, family):
    parent, _ = family
    r = run_cli("explain", parent.ref, "--dataset", "wtext", "--examples", "3", "--method", "occlusion", "--wait",
                "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output[r.output.index("{"):])
    assert out["version"] == parent.ref and out["method"] == "occlusion" and len(out["examples"]) == 3
    from relman.data import load_dataset

    texts = load_dataset(catalog, "wtext").texts
    for e in out["examples"]:
        assert [f["name"] for f in e["features"]] == texts[e["index"]].split()  # input order, one per word
        assert e["prediction"] in LABELS and set(e["features"][0]) == {"name", "score"}
    jobs = catalog.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    one = out["examples"][1]["index"]
    r2 = run_cli("explain", parent.ref, "--dataset", "wtext", "--example", str(one), "--method", "occlusion",
                 "--json")
    assert r2.exit_code == 0 and catalog.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == jobs  # reused
    assert json.loads(r2.output)["examples"] == [out["examples"][1]]
    r3 = run_cli("explain", parent.ref, "--dataset", "wtext", "--example", str(one), "--method", "occlusion")
    assert r3.exit_code == 0 and "(stored)" in r3.output and f"#{one}:" in r3.output


def test_bad_requests_get_one_line_and_store_nothing(run_cli, catalog, family, tmp_path):
    from relman.app.datasets import register_demo_digits

    parent, onnx = family
    register_demo_digits(catalog, "digits", n=20)
    catalog.add_version("blob", {"w.bin": _file(tmp_path / "w.bin")}, format="raw")

    def state():
        return (catalog.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0],
                catalog.conn.execute("SELECT COUNT(*) FROM evaluation_artifacts").fetchone()[0],
                catalog.conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0], sorted(catalog.store.all_shas()))

    before = state()
    cases = [
        (("explain", parent.ref, "--dataset", "digits"), "holds image data"),
        (("explain", parent.ref, "--dataset", "wtext", "--example", "40"), "example index 40 is out of range"),
        (("explain", "blob@1.0.0", "--dataset", "wtext"), "no explainer for task 'unknown'"),
        (("explain", onnx.ref, "--dataset", "wtext", "--method", "ig"), "--method occlusion"),
        (("evaluate", parent.ref, "--dataset", "digits", "--suite", "explain"), "holds image data"),
        (("evaluate", "blob@1.0.0", "--dataset", "wtext", "--suite", "explain"), "does not apply"),
    ]
    for args, message in cases:
        r = run_cli(*args)
        assert r.exit_code != 0, args
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and message in lines[0], (args, r.output)
    assert state() == before


def _file(path: Path) -> Path:
    path.write_bytes(b"not a model")
    return path


def test_gc_keeps_attributions_and_deleting_the_version_releases_them(catalog, family):
    from relman.app.housekeeping import collect_garbage, delete_version

    parent, onnx = family
    run_evaluate(catalog, onnx.id, dataset="wtext", suites=["explain"], options={"explain_examples": 2},
                 parent_version_id=parent.id)
    mine = catalog.evaluation_artifacts(onnx.id)[-1]["sha256"]
    collect_garbage(catalog)
    assert catalog.store.has(mine) and catalog.verify_store() == []
    delete_version(catalog, onnx.ref, why="test")
    assert catalog.evaluation_artifacts(onnx.id) == [] and not catalog.store.has(mine)
    assert catalog.evaluation_artifacts(parent.id) and catalog.orphan_blobs() == []  # the parent's stay


def test_the_suite_claims_exactly_the_tasks_that_have_an_explainer():
    from relman.evaluate.explain import EXPLAINERS
    from relman.evaluate.registry import get_suite

    assert set(get_suite("explain").tasks) == set(EXPLAINERS)


def test_a_second_child_reuses_the_parents_stored_attributions(catalog, family):
    from explain_support import compress_child_version

    parent, onnx = family
    opts = {"explain_examples": 4, "explain_method": "occlusion"}
    run_evaluate(catalog, onnx.id, dataset="wtext", suites=["explain"], options=opts, parent_version_id=parent.id)
    assert len(catalog.evaluation_artifacts(parent.id)) == 1
    int8 = compress_child_version(catalog, parent.id, "torch-int8-dynamic")
    run_evaluate(catalog, int8.id, dataset="wtext", suites=["explain"], options=opts, parent_version_id=parent.id)
    assert len(catalog.evaluation_artifacts(parent.id)) == 1  # not computed (nor stored) again
    flips = next(m for m in catalog.metrics(int8.id) if m["name"] == "explain_flips")
    assert flips["context"]["parent_attributions"] == "stored"
    assert catalog.metric_values(int8.id)["explain_agreement_vs_parent"] >= 0.7
    # other settings are not interchangeable: SHAP computes the parent's afresh
    run_evaluate(catalog, int8.id, dataset="wtext", suites=["explain"], parent_version_id=parent.id,
                 options={"explain_examples": 2, "explain_method": "shap", "shap_samples": 16})
    assert len(catalog.evaluation_artifacts(parent.id)) == 2
