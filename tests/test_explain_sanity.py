"""Issue 27: explanation agreement that measures the model, and the model-randomisation
sanity check (Adebayo et al., 2018) as stored evidence.

On the demo ViT over digits and on a tiny text classifier with a planted token: a copy whose
weights were re-initialised must agree little with the trained model, its INT8 child a lot;
`explain_agreement_vs_parent >= 0.7` passes the child and refuses the copy. The measure before
issue 27 (magnitudes over all features, black baseline) fails the randomisation check on
digits, and that failure is stored, shown by `relman explain`, the card and the GUI, and
refused by gates."""

from __future__ import annotations

from pathlib import Path

import pytest

from explain_support import (compress_child_version, planted_text_rows, reinitialised_copy,
                             train_digits_vit, train_text_classifier, write_csv)

pytestmark = pytest.mark.heavy  # trains tiny models, runs Captum and the real evaluate job

GATE = "explain_agreement_vs_parent >= 0.7"


def run_evaluate(catalog, version_id: int, **params):
    from relman.evaluate.job import run
    from relman.jobs.context import JobContext

    ctx = JobContext(catalog, device="cpu")
    try:
        return run({"version_id": version_id, "threads": 1, **params}, ctx)
    finally:
        ctx.cleanup()


def gate(catalog, version, rule: str = GATE):
    from relman.release.gates import evaluate_gates
    from relman.release.policy import default_policy

    policy = default_policy()
    policy["gates"]["candidate"] = [rule]
    return evaluate_gates(catalog, version, "candidate", policy=policy)


def family(catalog, trained: Path, tmp_path: Path, model: str):
    """The trained version, its INT8 child (the real compress job) and a re-initialised copy
    registered as another child."""
    from relman.app.models import import_model

    parent = import_model(catalog, trained, model)
    int8 = compress_child_version(catalog, parent.id, "torch-int8-dynamic")
    copy = reinitialised_copy(trained, tmp_path / f"{model}-reinit")
    files = {p.relative_to(copy).as_posix(): p for p in copy.rglob("*") if p.is_file()}
    rand = catalog.add_version(model, files, format="hf", task=parent.task, parents=[(parent.id, None)],
                               relation="retrain", event_kind="derive")
    return parent, int8, rand


def check_family(catalog, parent, int8, rand, dataset: str, n: int) -> dict:
    opts = {"explain_examples": n, "explain_method": "occlusion"}  # INT8 has no gradients: like with like
    for child in (int8, rand):
        run_evaluate(catalog, child.id, dataset=dataset, suites=["explain"], options=opts,
                     parent_version_id=parent.id)
    got = {"int8": catalog.metric_values(int8.id)["explain_agreement_vs_parent"],
           "random": catalog.metric_values(rand.id)["explain_agreement_vs_parent"]}
    assert got["random"] <= 0.3 and got["int8"] >= 0.7, got
    assert gate(catalog, int8).passed
    refused = gate(catalog, rand)
    assert not refused.passed and "explain_agreement_vs_parent" in refused.failing_text()
    # the INT8 child has no float weights: the check re-initialised its parent's
    m = {r["name"]: r for r in catalog.metrics(int8.id)}
    r = m["explain_randomisation_agreement"]
    assert r["context"]["randomised"] == parent.ref and len(r["context"]["ci95"]) == 2
    assert r["value"] <= 0.3 and "untrustworthy" not in m["explain_agreement_vs_parent"]["context"]
    return got


def test_demo_vit_on_digits_agreement_measures_the_model(catalog, tmp_path):
    from relman.app.datasets import register_demo_digits
    from relman.data.demo import digits

    ds = digits(None, val_fraction=0, test_fraction=0)
    vit = train_digits_vit(tmp_path / "vit", ds.take(list(range(1000))), epochs=20)
    parent, int8, rand = family(catalog, vit, tmp_path, "vit")
    register_demo_digits(catalog, "digits")
    check_family(catalog, parent, int8, rand, "digits", 8)


def test_planted_token_classifier_agreement_measures_the_model(catalog, tmp_path):
    from relman.app.datasets import register_dataset

    bert = train_text_classifier(tmp_path / "bert", planted_text_rows(240, seed=0))
    parent, int8, rand = family(catalog, bert, tmp_path, "bert")
    register_dataset(catalog, write_csv(tmp_path / "p.csv", planted_text_rows(40, seed=5)), "planted")
    check_family(catalog, parent, int8, rand, "planted", 8)


def test_the_old_measure_fails_the_randomisation_check_and_every_reader_says_so(catalog, tmp_path, run_cli,
                                                                                 qtbot, catalog_path):
    """Magnitudes over all features with a black baseline (the measure before issue 27) on
    8 x 8 digits: the trained ViT agrees with its own re-initialised self, so its explain
    metrics are stored as untrustworthy, and the CLI, the card, the GUI and gates say so. The
    new measure on the same model and examples passes."""
    from relman.app.datasets import register_demo_digits
    from relman.app.models import import_model
    from relman.data.demo import digits
    from relman.release.modelcard import render_card

    ds = digits(None, val_fraction=0, test_fraction=0)
    vit = import_model(catalog, train_digits_vit(tmp_path / "vit", ds.take(list(range(1000))), epochs=20), "vit")
    register_demo_digits(catalog, "digits")
    run_evaluate(catalog, vit.id, dataset="digits", suites=["explain"],
                 options={"explain_examples": 8, "explain_method": "ig", "explain_measure": "magnitude-all",
                          "explain_baseline": "black"})
    m = {r["name"]: r for r in catalog.metrics(vit.id)}
    r = m["explain_randomisation_agreement"]
    assert r["value"] > 0.5 and r["context"]["randomised"] == vit.ref and len(r["context"]["interval"]) == 2
    why = m["explain_comprehensiveness"]["context"]["untrustworthy"]
    assert "re-initialised" in why
    report = gate(catalog, vit, "explain_comprehensiveness >= 0")
    assert not report.passed and "untrustworthy" in report.failing_text()
    out = run_cli("explain", vit.ref, "--dataset", "digits", "--examples", "8", "--method", "ig")
    assert out.exit_code == 0 and "WARNING" in out.output and "model-randomisation" in out.output, out.output
    assert "untrustworthy" in render_card(catalog, vit).lower()
    from PySide6.QtCore import QSettings

    from relman.ui.qt_main import MainWindow

    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "g.ini"), QSettings.Format.IniFormat),
                   run_jobs=False)
    qtbot.addWidget(w)
    w.show()
    w.set_selection([vit.id])
    view = w.show_view("explain")
    qtbot.waitUntil(lambda: "model-randomisation" in view.warning.text())
    assert view.warning.isVisible()
    # the new measure (blur baseline, signed, informative features) passes the same check
    run_evaluate(catalog, vit.id, dataset="digits", suites=["explain"],
                 options={"explain_examples": 8, "explain_method": "ig"})
    again = {r["name"]: r for r in catalog.metrics(vit.id)}
    assert again["explain_randomisation_agreement"]["value"] <= 0.3
    assert "untrustworthy" not in again["explain_comprehensiveness"]["context"]
    assert gate(catalog, vit, "explain_comprehensiveness >= -1000").passed
