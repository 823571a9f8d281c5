"""The seeds' explanation methods beside IG, occlusion and KernelSHAP (issue 27, item 3):
attention rollout on transformer encoders and ViTs, and LIME. Each must find a planted signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from explain_support import (DECISIVE, image_dataset, planted_images, planted_text_rows, text_dataset,
                             train_image_classifier, train_text_classifier)
from relman.errors import EvaluationError

pytestmark = pytest.mark.heavy  # trains tiny models, runs Captum


def explain(folder: Path, ds, method: str, task: str, fmt: str = "hf", **kw):
    from relman.evaluate.explain.attribute import Explainer
    from relman.tasks import open_runner

    runner = open_runner(folder, fmt, task, "cpu", 1)
    return Explainer(runner, method, **kw).explain(ds, list(range(len(ds))), faithfulness=False)


@pytest.fixture(scope="module")
def planted_text(tmp_path_factory) -> Path:
    return train_text_classifier(tmp_path_factory.mktemp("planted-text") / "m", planted_text_rows(240, seed=0))


def test_attention_rollout_puts_the_planted_bright_patch_in_its_top_3(tmp_path):
    images, labels, _ = planted_images(400, seed=0)
    folder = train_image_classifier(tmp_path / "vit", images, labels)
    test_images, test_labels, where = planted_images(40, seed=1)
    with_patch = [i for i, w in enumerate(where) if w is not None]
    ds = image_dataset(test_images, test_labels).take(with_patch)
    examples = explain(folder, ds, "attention", "image-classification")
    assert len(examples[0]["features"]) == 16 and examples[0]["grid"] == [4, 4]
    hits = []
    for e, i in zip(examples, with_patch):
        scores = np.array([f["score"] for f in e["features"]])
        assert (scores >= 0).all() and np.isfinite(scores).all()  # rollout is a flow share: never negative
        hits.append(where[i][0] * 4 + where[i][1] in np.argsort(-scores)[:3])
    assert np.mean(hits) >= 0.9, np.mean(hits)


def test_attention_rollout_explains_text_and_refuses_onnx(planted_text, catalog, tmp_path):
    from relman.app.explain import resolve_method
    from relman.app.models import import_model
    from relman.evaluate.explain.attribute import Explainer
    from relman.tasks import open_runner
    from explain_support import compress_child

    ds = text_dataset(planted_text_rows(6, seed=4))
    got = explain(planted_text, ds, "attention", "text-classification")
    assert all(len(e["features"]) == len(t.split()) for e, t in zip(got, ds.texts))
    assert all(f["score"] >= 0 for e in got for f in e["features"])
    onnx = compress_child(catalog, import_model(catalog, planted_text, "p").id, "onnx-export", tmp_path)
    with pytest.raises(EvaluationError, match="attention weights.*--method occlusion"):
        Explainer(open_runner(onnx, "onnx", "text-classification", "cpu", 1), "attention", ref="p (onnx)")
    with pytest.raises(EvaluationError, match="ONNX graph.*--method occlusion"):
        resolve_method("onnx", "attention", "p")


def test_lime_finds_the_planted_token(planted_text):
    rows = [r for r in planted_text_rows(30, seed=1) if r[1] in DECISIVE]
    got = explain(planted_text, text_dataset(rows), "lime", "text-classification", shap_samples=64)
    top = [e["features"][int(np.argmax([f["score"] for f in e["features"]]))]["name"] for e in got]
    hits = np.mean([t == DECISIVE[label] for t, (_, label) in zip(top, rows)])
    assert hits >= 0.9, (hits, top)
