"""The Explain view on attributions stored by the real explain job: side-by-side overlays with
each version's prediction, the flip list sorted by divergence, and "Compute" queueing jobs
(never computing on the GUI thread). pytest-qt, offscreen."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings  # noqa: E402


@pytest.fixture
def explained(catalog, tiny_vit, tmp_path):
    """A ViT parent and a differently initialised 'child' (so some predictions flip), both
    explained on the same digits by the real explain job."""
    from relman.app.datasets import register_demo_digits
    from relman.app.explain import plan_explain
    from relman.app.models import import_model
    from relman.evaluate.explain import job
    from relman.jobs.context import JobContext
    from relman.modelio import tiny

    base = import_model(catalog, tiny_vit, "vit")
    other = tiny.tiny_vit_classifier(tmp_path / "vit-other", seed=3)
    files = {p.relative_to(other).as_posix(): p for p in other.rglob("*") if p.is_file()}
    child = catalog.add_version("vit", files, format="hf", task=base.task, parents=[(base.id, None)],
                                relation="retrain", event_kind="derive")
    register_demo_digits(catalog, "digits", n=40)
    for v in (base, child):
        ctx = JobContext(catalog, device="cpu")
        try:
            job.run(plan_explain(catalog, v.ref, "digits", examples=12, method="occlusion"), ctx)
        finally:
            ctx.cleanup()
    return base, child


def test_explain_view_shows_both_versions_and_the_flip_list(qtbot, catalog_path, explained, tmp_path):
    from relman.app.explain import explanation_pair
    from relman.ui.qt_main import MainWindow

    base, child = explained
    pair = explanation_pair_for(catalog_path, child.id)
    assert pair["flips"], "a differently initialised child should flip some predictions"
    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "g.ini"), QSettings.Format.IniFormat),
                   run_jobs=False)
    qtbot.addWidget(w)
    w.show()
    try:
        w.set_selection([child.id])
        view = w.show_view("explain")
        # the stored attributions are read on a worker thread: the view fills when they arrive
        view.reload()
        assert view.loading and view.example_list.count() == 0
        qtbot.waitUntil(lambda: not view.loading, timeout=20000)
        assert view.example_list.count() == 12, (view.status.text(), w.messages_log.messages[-3:])
        assert view.left.title.text() == child.ref and view.right.title.text() == base.ref
        assert view.left.prediction.text().startswith("prediction: ") and "confidence" in view.left.prediction.text()
        assert not view.left.body.pixmap().isNull() and not view.right.body.pixmap().isNull()  # overlays drawn
        flips = [view.flip_list.item(i).text() for i in range(view.flip_list.count())]
        assert len(flips) == len(pair["flips"])
        divergences = [float(t.rsplit(" ", 1)[1]) for t in flips]
        assert divergences == sorted(divergences, reverse=True)
        # choosing a flip shows that example on both sides, with different predictions
        view.flip_list.setCurrentRow(0)
        first = pair["flips"][0]
        assert first["child_prediction"] in view.left.prediction.text()
        assert first["parent_prediction"] in view.right.prediction.text()
        # computing new attributions queues jobs for both versions, nothing is computed here
        before = w.catalog.conn.execute("SELECT COUNT(*) FROM evaluation_artifacts").fetchone()[0]
        view.examples.setValue(3)
        ids = view.queue_jobs()
        assert len(ids) == 2 and view.progress.isVisible()
        rows = w.catalog.query("SELECT kind, status, params FROM jobs WHERE id IN (?, ?)", ids)
        assert {r["kind"] for r in rows} == {"explain"} and {r["status"] for r in rows} == {"queued"}
        assert w.catalog.conn.execute("SELECT COUNT(*) FROM evaluation_artifacts").fetchone()[0] == before
        assert explanation_pair(w.catalog, child.id)["version"]["indices"] == pair["version"]["indices"]
    finally:
        w.shutdown()


def test_token_heatmap_html_marks_supporting_and_opposing_tokens():
    from relman.ui.qt_explain import token_html

    html = token_html({"features": [{"name": "great", "score": 2.0}, {"name": "<b>", "score": -1.0},
                                    {"name": "the", "score": 0.0}]})
    assert "#d62728" in html and "#8fbbda" in html and "#ffffff" in html and "&lt;b&gt;" in html


def explanation_pair_for(catalog_path: Path, version_id: int):
    from relman.app.explain import explanation_pair
    from relman.catalog import open_catalog

    with open_catalog(catalog_path) as cat:
        return explanation_pair(cat, version_id)


def test_both_sides_share_one_colour_scale_with_a_floor():
    from relman.ui.qt_explain import shared_scale

    strong = {"score": 4.0, "features": [{"name": "great", "score": 3.0}]}
    weak = {"score": 4.0, "features": [{"name": "great", "score": 1e-6}]}
    assert shared_scale(strong, weak) == 3.0  # the weak side is drawn pale next to the strong one
    assert shared_scale(weak) == pytest.approx(0.2)  # ~0 everywhere: not stretched to full colour
    assert shared_scale(None, None) == 0.0



def test_attention_rollout_is_an_alternative_map_in_the_view(qtbot, catalog_path, explained, tmp_path):
    """Beside the stored occlusion map, an attention-rollout map of the same version can be
    chosen in the view ("show"), read on the worker thread like the other."""
    from relman.app.explain import plan_explain
    from relman.catalog import open_catalog
    from relman.evaluate.explain import job
    from relman.jobs.context import JobContext
    from relman.ui.qt_main import MainWindow

    base, _ = explained
    with open_catalog(catalog_path) as cat:
        ctx = JobContext(cat, device="cpu")
        try:
            job.run(plan_explain(cat, base.ref, "digits", examples=4, method="attention"), ctx)
        finally:
            ctx.cleanup()
    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "g.ini"), QSettings.Format.IniFormat),
                   run_jobs=False)
    qtbot.addWidget(w)
    w.show()
    try:
        w.set_selection([base.id])
        view = w.show_view("explain")
        qtbot.waitUntil(lambda: not view.loading and view.shown.count() == 3, timeout=20000)
        assert view.status.text().startswith("attention")  # the newest map
        view.shown.setCurrentIndex(view.shown.findData("occlusion"))
        qtbot.waitUntil(lambda: not view.loading and view.status.text().startswith("occlusion"), timeout=20000)
        assert view.example_list.count() == 12
        view.shown.setCurrentIndex(view.shown.findData("attention"))
        qtbot.waitUntil(lambda: not view.loading and view.status.text().startswith("attention"), timeout=20000)
        assert view.example_list.count() == 4 and not view.left.body.pixmap().isNull()
    finally:
        w.shutdown()
