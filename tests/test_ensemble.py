"""The `ensemble` recipe: two complementary weak classifiers (each trained where only one planted
feature carries the label) combined into one version that beats each; the version is a
manifest pinning its members, evaluated, explained by occlusion (not by gradients), gated,
bundled with its members, exported as one ONNX graph, and it keeps its members from deletion.
Members of different tasks or label sets are refused in one line with nothing stored."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from relman.app.models import import_model
from relman.errors import EvaluationError, HousekeepingError, RecipeError

from explain_support import train_text_classifier, write_csv
from recipe_support import evaluate_job

LABELS = ("negative", "positive")
FILLER = ["the", "a", "movie", "film", "is", "was", "plot", "actor", "and", "very"]
FEATURE_A = {"love": "positive", "hate": "negative"}  # the feature member A learns
FEATURE_B = {"fun": "positive", "boring": "negative"}  # the feature member B learns


def planted_rows(n: int, seed: int, learns: dict[str, str] | None) -> list[tuple[str, str]]:
    """Half the rows carry a word of feature A, half a word of feature B, each word deciding
    the label. With `learns` set, rows of the other feature get balanced random labels, so a
    model trained on them can learn only `learns` and is at chance on the other half."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        feature = FEATURE_A if i % 2 == 0 else FEATURE_B
        word = rng.choice(sorted(feature))
        label = feature[word]
        if learns is not None and feature is not learns:
            label = LABELS[(i // 2) % 2]
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 6))]
        words.insert(rng.randrange(len(words) + 1), word)
        rows.append((" ".join(words), label))
    return rows


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Two weak members (A knows feature A only, B feature B only) and the planted test CSV."""
    root = tmp_path_factory.mktemp("ensemble-members")
    a = train_text_classifier(root / "a", planted_rows(240, 1, FEATURE_A), epochs=12, seed=1)
    b = train_text_classifier(root / "b", planted_rows(240, 2, FEATURE_B), epochs=12, seed=2)
    return a, b, write_csv(root / "test.csv", planted_rows(120, 3, None))


def ensemble_job(catalog, parent_ids: list[int], params: dict | None = None, recipe: str = "ensemble"):
    """The compress job's body here (real JobContext, no worker process); the child version."""
    from relman.compress import job
    from relman.jobs.context import JobContext

    ctx = JobContext(catalog)
    try:
        result = job.run({"recipe": recipe, "params": params or {}, "parent_version_ids": parent_ids,
                          "evaluate": False}, ctx)
    finally:
        ctx.cleanup()
    return catalog.get_version(result["version_id"])


@pytest.fixture
def stored(catalog, members):
    from relman.app.datasets import register_dataset

    a_dir, b_dir, test_csv = members
    a, b = import_model(catalog, a_dir, "senti"), import_model(catalog, b_dir, "senti")
    register_dataset(catalog, test_csv, "planted", format="csv", labels=list(LABELS))
    ens = ensemble_job(catalog, [a.id, b.id])
    return a, b, ens


def test_ensemble_of_complementary_members_beats_each(catalog, stored):
    a, b, ens = stored
    assert ens.format == "ensemble" and ens.task == "text-classification" and ens.ref == "senti@1.0.1"
    files = {x["path"]: x for x in catalog.artifacts(ens.id)}
    assert "ensemble.json" in files and "config.json" in files and "vocab.txt" in files
    assert not any(p.endswith(".safetensors") for p in files)  # no member weight is copied
    manifest = json.loads(catalog.store.path(files["ensemble.json"]["sha256"]).read_text())
    assert manifest["combine"] == "mean"
    assert [(m["ref"], m["manifest_sha256"], m["weight"]) for m in manifest["members"]] == [
        (a.ref, a.manifest_sha256, 0.5), (b.ref, b.manifest_sha256, 0.5)]
    edges = catalog.parents(ens.id)  # multi-parent lineage, weights on the edges
    assert [(e["parent_id"], e["weight"], e["relation"]) for e in edges] == [
        (a.id, 0.5, "ensemble"), (b.id, 0.5, "ensemble")]
    assert ens.recipe["name"] == "ensemble" and ens.meta["labels"] == list(LABELS)

    acc = {}
    for v in (a, b, ens):
        evaluate_job(catalog, v.id, dataset="planted", suites=["quality"])
        acc[v.ref] = catalog.metric_values(v.id)["accuracy"]
    # each member is right on its own half only; the mean of probabilities is right on both
    assert acc[a.ref] <= 0.85 and acc[b.ref] <= 0.85, acc
    assert acc[ens.ref] >= 0.95 and acc[ens.ref] > max(acc[a.ref], acc[b.ref]) + 0.1, acc

    vote = ensemble_job(catalog, [a.id, b.id], {"combine": "vote", "weights": "3,1"})
    assert vote.meta["ensemble"]["combine"] == "vote" and vote.meta["parent_weights"] == [0.75, 0.25]
    evaluate_job(catalog, vote.id, dataset="planted", suites=["quality", "fidelity"], parent_version_id=a.id)
    values = catalog.metric_values(vote.id)
    # a 3:1 weighted vote of two members is member A's vote: its accuracy and full agreement with A
    assert values["accuracy"] == pytest.approx(acc[a.ref])
    assert values["agreement"] == 1.0

    from relman.release.gates import evaluate_gates
    from relman.release.policy import default_policy

    policy = default_policy()
    policy["gates"]["candidate"] = ["accuracy >= 0.95"]
    assert evaluate_gates(catalog, ens, "candidate", policy=policy).passed
    assert not evaluate_gates(catalog, a, "candidate", policy=policy).passed


def test_explain_uses_occlusion_and_refuses_gradients_for_ensembles(catalog, stored, tmp_path):
    from relman.evaluate.explain.attribute import check_method_fits, default_method
    from relman.modelio.loading import materialize_version
    from relman.tasks import open_runner

    a, b, ens = stored
    runner = open_runner(materialize_version(catalog, ens.id, tmp_path / "lay"), ens.format, ens.task, "cpu", 1)
    assert default_method(runner) == "occlusion"
    with pytest.raises(EvaluationError, match="not supported for ensembles.*--method occlusion"):
        check_method_fits(runner, "ig", ens.ref)
    evaluate_job(catalog, ens.id, dataset="planted", suites=["explain"], parent_version_id=a.id,
                 options={"explain_examples": 6})
    m = {r["name"]: r for r in catalog.metrics(ens.id)}
    assert m["explain_agreement_vs_parent"]["context"]["method"] == "occlusion"


def test_deleting_a_member_is_refused_while_the_ensemble_lives(catalog, stored):
    from relman.app.housekeeping import delete_version

    a, b, ens = stored
    with pytest.raises(HousekeepingError, match=rf"refused: {a.ref} is a member of the kept ensemble\(s\) "
                                                rf"{ens.ref}; delete those first"):
        delete_version(catalog, a.ref, why="cleanup")
    assert not catalog.get_version(a.id).deleted
    delete_version(catalog, ens.ref, why="replaced")
    delete_version(catalog, a.ref, why="no longer needed")
    assert catalog.get_version(a.id).deleted


def test_bundle_carries_the_members_and_import_restores_them(catalog, stored, tmp_path):
    from relman.catalog import open_catalog
    from relman.modelio.loading import materialize_version
    from relman.release.bundle import export_bundle, import_bundle
    from relman.tasks import open_runner

    from relman.app.bundles import create_key

    a, b, ens = stored
    create_key("lab-a")
    out = export_bundle(catalog, ens.id, tmp_path / "ens.relman")
    target = open_catalog(tmp_path / "target")
    try:
        result = import_bundle(target, out["path"])
        assert sorted(result["members_imported"]) == sorted([a.ref, b.ref]) and result["parents_linked"] == 2
        got = target.resolve(ens.ref)
        assert got.format == "ensemble" and got.manifest_sha256 == ens.manifest_sha256
        texts = ["the movie love", "a boring plot", "fun and very film", "hate the actor"]
        logits = []
        for cat, v, where in ((catalog, ens, "src"), (target, got, "dst")):
            runner = open_runner(materialize_version(cat, v.id, tmp_path / where), v.format, v.task, "cpu", 1)
            arrays = runner.preprocessor(texts, padding=True, return_tensors="np")
            logits.append(runner.backend.run(runner.backend.to_native(dict(arrays))))
        np.testing.assert_allclose(logits[0], logits[1], atol=1e-6)
        assert [LABELS[i] for i in logits[1].argmax(-1)] == ["positive", "negative", "positive", "negative"]
        assert target.verify_audit() == [] and target.orphan_blobs() == []
    finally:
        target.close()


def test_onnx_export_is_one_graph_of_all_members(catalog, stored, tmp_path):
    import onnx

    from relman.modelio.loading import materialize_version, onnx_session
    from relman.tasks import open_runner

    a, b, ens = stored
    child = ensemble_job(catalog, [ens.id], {"tolerance": "1e-4"}, recipe="onnx-export")
    assert child.format == "onnx" and [e["parent_id"] for e in catalog.parents(child.id)] == [ens.id]
    folder = materialize_version(catalog, child.id, tmp_path / "onnx")
    graphs = sorted(p.name for p in folder.glob("*.onnx"))
    assert graphs == ["model.onnx"]
    model = onnx.load(str(folder / "model.onnx"))
    assert [o.name for o in model.graph.output] == ["logits"]
    assert sum(1 for n in model.graph.node if n.op_type == "Softmax") >= 2  # each member's probabilities
    texts = ["the movie love", "a boring plot"]
    runner = open_runner(materialize_version(catalog, ens.id, tmp_path / "torch"), ens.format, ens.task, "cpu", 1)
    arrays = dict(runner.preprocessor(texts, padding=True, return_tensors="np"))
    want = runner.backend.run(runner.backend.to_native(arrays))
    sess = onnx_session(folder)
    feeds = {i.name: arrays[i.name].astype(np.int64) for i in sess.get_inputs()}
    np.testing.assert_allclose(sess.run(["logits"], feeds)[0], want, atol=1e-4)


def test_members_of_different_tasks_or_label_sets_are_refused_with_nothing_stored(catalog, stored, tiny_vit,
                                                                                    tmp_path):
    from relman.app.compress import plan_compression
    from relman.compress.ensemble import check_members
    from relman.compress.registry import ModelSource
    from relman.modelio import tiny

    a, b, ens = stored
    vit = import_model(catalog, tiny_vit, "vit")
    three = import_model(catalog, tiny.tiny_bert_classifier(tmp_path / "three", ("neg", "neu", "pos")), "three")
    before = (len(catalog.versions()), catalog.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])
    with pytest.raises(RecipeError, match=r"^recipe 'ensemble' cannot combine vit@1\.0\.0 \(image-classification\) "
                                          r"with senti@1\.0\.0 \(text-classification\): its parents must do one "
                                          r"task$"):
        plan_compression(catalog, [a.ref, vit.ref], "ensemble")
    with pytest.raises(RecipeError, match=r"^recipe 'ensemble' cannot combine three@1\.0\.0 \(labels neg,neu,pos\) "
                                          r"with senti@1\.0\.0 \(labels negative,positive\)"):
        plan_compression(catalog, [a.ref, three.ref], "ensemble")
    with pytest.raises(RecipeError, match=f"cannot take {ens.ref}: its format is 'ensemble'"):
        plan_compression(catalog, [a.ref, ens.ref], "ensemble")
    # the worker's own check, on the laid-out files (labels from config.json, not the catalog row)
    srcs = [ModelSource(v, catalog.materialize(v.id, tmp_path / f"m{v.id}")) for v in (a, three)]
    with pytest.raises(RecipeError, match="must share one label set"):
        check_members(srcs)
    assert (len(catalog.versions()), catalog.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]) == before
    assert catalog.orphan_blobs() == []
