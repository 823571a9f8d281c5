"""Jobs from the GUI through the real runner and real worker processes: cancel and retry a
running job, the main thread's longest stall while a job runs (QTimer probe), and compress /
evaluate queued from their dialogs and landing as a new version and new metrics."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings  # noqa: E402

from ui_support import StallProbe, accept_with  # noqa: E402

STALL_LIMIT_S = 0.200  # the test's hard limit; the 50 ms goal is a benchmark figure


def make_window(qtbot: Any, catalog_path: Path, tmp_path: Path, cpu_slots: int = 1) -> Any:
    from relman.ui.qt_main import MainWindow

    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat),
                   run_jobs=True, cpu_slots=cpu_slots, poll_ms=250, runner_ms=200)
    qtbot.addWidget(w)
    w.show()
    return w


def job_status(w: Any, job_id: int) -> str | None:
    j = w.jobs.job(job_id)
    return j["status"] if j else None


def stop_all_jobs(w: Any, qtbot: Any, catalog: Any) -> None:
    """Cancel whatever is still queued/running and let the GUI's runner finish them."""
    from relman.app.jobs import cancel_job

    for (job_id,) in catalog.conn.execute("SELECT id FROM jobs WHERE status IN ('queued', 'running')").fetchall():
        try:
            cancel_job(catalog, job_id)
        except Exception:
            pass
    qtbot.waitUntil(lambda: catalog.conn.execute(
        "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')").fetchone()[0] == 0, timeout=60_000)


def test_cancel_and_retry_a_running_job_without_stalling_the_window(qtbot, catalog, catalog_path, tmp_path,
                                                                     monkeypatch):
    from relman.app.jobs import queue_job

    monkeypatch.setenv("RELMAN_CANCEL_GRACE_S", "3")
    job_id = queue_job(catalog, "sleep", {"seconds": 120, "steps": 1200}, device="cpu")
    w = make_window(qtbot, catalog_path, tmp_path)
    try:
        w.tabs.setCurrentIndex(4)
        jobs = w.jobs
        import gc

        # As relman.ui.app.open_window does at start-up: collect, then freeze what exists, so
        # a full cyclic-GC pass does not rescan everything this test process holds (torch and
        # transformers, loaded here by the tiny-model fixtures, are millions of objects).
        gc.collect()
        gc.freeze()
        qtbot.waitUntil(lambda: job_status(w, job_id) == "running", timeout=90_000)
        # the panel has been painted once with the running job (first paint of a pyqtgraph
        # view is not what this measures); now measure the steady state while the job runs
        settle = time.perf_counter()
        qtbot.waitUntil(lambda: time.perf_counter() - settle > 0.5, timeout=10_000)
        probe = StallProbe()
        probe.start()
        started = time.perf_counter()
        qtbot.waitUntil(lambda: time.perf_counter() - started > 3.0 and (w.jobs.job(job_id)["progress"] or 0) > 0,
                        timeout=60_000)
        worst = probe.stop()
        gc.unfreeze()
        print(f"\nlongest main-thread stall while a job ran: {worst * 1000:.1f} ms over {len(probe.gaps)} probes")
        assert worst < STALL_LIMIT_S, f"main thread stalled {worst * 1000:.0f} ms"
        # the panel shows it: progress bar, device, elapsed time, log tail
        jobs.select_job(job_id)
        row = next(r for r, j in enumerate(jobs.model.jobs) if j["id"] == job_id)
        assert jobs.model.index(row, 4).data().endswith("%")
        assert jobs.model.index(row, 5).data() == "cpu"
        assert ":" in jobs.model.index(row, 6).data()
        assert jobs.cancel_btn.isEnabled() and not jobs.retry_btn.isEnabled()
        jobs.cancel_btn.click()
        qtbot.waitUntil(lambda: job_status(w, job_id) == "cancelled", timeout=60_000)
        assert jobs.retry_btn.isEnabled() and not jobs.cancel_btn.isEnabled()
        jobs.select_job(job_id)
        jobs.retry_btn.click()
        qtbot.waitUntil(lambda: job_status(w, job_id) in ("queued", "running"), timeout=30_000)
        assert catalog.query("SELECT attempts FROM jobs WHERE id = ?", [job_id])[0]["attempts"] >= 1
        stop_all_jobs(w, qtbot, catalog)
        assert job_status(w, job_id) == "cancelled" or w.refresh(force=True) or job_status(w, job_id) == "cancelled"
    finally:
        w.shutdown()


def test_cancel_or_retry_that_the_queue_refuses_is_a_message(qtbot, catalog, catalog_path, tmp_path):
    from relman.app.jobs import queue_job

    job_id = queue_job(catalog, "noop", {}, device="cpu")
    w = make_window(qtbot, catalog_path, tmp_path)
    try:
        qtbot.waitUntil(lambda: job_status(w, job_id) == "succeeded", timeout=90_000)
        w.job_actions.cancel_job(job_id)  # e.g. a stale button: the queue says why, the window shows it
        assert w.messages[-1][0] == "error" and "already succeeded" in w.messages[-1][1]
        w.job_actions.retry_job(job_id)
        assert w.messages[-1][0] == "error" and "only failed or cancelled" in w.messages[-1][1]
    finally:
        w.shutdown()


def test_compress_then_evaluate_from_the_dialogs(qtbot, catalog, catalog_path, tmp_path, tiny_vit):
    from relman.app.datasets import register_demo_digits
    from relman.app.models import import_model

    base = import_model(catalog, tiny_vit, "digits-vit")
    register_demo_digits(catalog, "digits", n=100)
    w = make_window(qtbot, catalog_path, tmp_path, cpu_slots=2)
    try:
        w.set_selection([base.id])

        def pick_recipe(d: Any) -> None:
            d.select_recipe("prune-magnitude")
            assert set(d.form.editors) >= {"sparsity", "scope", "exclude"}
            d.form.set_value("sparsity", 0.3)

        w.dialog_runner = accept_with(pick_recipe)
        w.actions_by_key["compress"].trigger()
        assert w.messages[-1][0] == "info", w.messages
        job = catalog.query("SELECT id, kind, params FROM jobs WHERE kind = 'compress'")[0]
        assert '"sparsity": 0.3' in job["params"]
        qtbot.waitUntil(lambda: job_status(w, job["id"]) in ("succeeded", "failed"), timeout=240_000)
        assert job_status(w, job["id"]) == "succeeded", w.jobs.job(job["id"])
        qtbot.waitUntil(lambda: len(w.snapshot.versions) == 2, timeout=10_000)
        child = next(v for v in w.snapshot.versions if v.id != base.id)
        assert child.recipe_name == "prune-magnitude"
        w.show_view("lineage")
        assert (base.id, child.id) in w.lineage.edges_drawn and "prune-magnitude" in w.lineage.edge_labels
        row = next(j for j in w.jobs.model.jobs if j["id"] == job["id"])
        assert "prune-magnitude" in row["target"] and child.ref in row["target"]
        stop_all_jobs(w, qtbot, catalog)  # the child's own follow-up evaluation is not needed here

        # evaluate the child on the digits, size suite only, from the Evaluate dialog
        w.set_selection([child.id])

        def pick_suites(d: Any) -> None:
            d.dataset.setCurrentText("digits")
            for name, box in d.suite_boxes.items():
                box.setChecked(name == "size")

        w.dialog_runner = accept_with(pick_suites)
        w.actions_by_key["evaluate"].trigger()
        assert w.messages[-1][0] == "info", w.messages
        eval_job = catalog.query("SELECT id FROM jobs WHERE kind = 'evaluate' ORDER BY id DESC")[0]["id"]
        qtbot.waitUntil(lambda: job_status(w, eval_job) in ("succeeded", "failed"), timeout=240_000)
        assert job_status(w, eval_job) == "succeeded", w.jobs.job(eval_job)
        suites = {r["suite"] for r in catalog.metrics(child.id)}
        assert "size" in suites
        qtbot.waitUntil(lambda: any(w.snapshot.by_id()[child.id].metrics), timeout=10_000)
    finally:
        stop_all_jobs(w, qtbot, catalog)
        w.shutdown()


def test_recipe_form_is_generated_from_the_registry_and_checks_values():
    from relman.compress.registry import all_recipes
    from relman.ui.qt_dialogs import CompressDialog
    from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QSpinBox

    recipes = list(all_recipes())
    d = CompressDialog(recipes, ["m@1.0.0"], datasets=["digits"])
    for r in recipes:
        d.select_recipe(r.name)
        for p in r.params:
            editor = d.form.editors[p.name]
            expected = (QComboBox if p.choices or p.name == "dataset" else QCheckBox if p.type is bool else
                        QSpinBox if p.type is int else QDoubleSpinBox if p.type is float else QLineEdit)
            assert isinstance(editor, expected), (r.name, p.name, type(editor))
    # a merge needs several parents: refused with the reason, dialog stays open
    merge = next(r for r in recipes if r.multi_parent)
    d.select_recipe(merge.name)
    d.accept()
    assert d.result() == 0 and "select at least two" in d.error_label.text()
    # a bad typed value (a choice not offered) is refused by the registry's own check
    choice_recipe = next(r for r in recipes if any(p.choices for p in r.params) and not r.multi_parent)
    d.select_recipe(choice_recipe.name)
    p = next(p for p in choice_recipe.params if p.choices)
    d.form.editors[p.name].setEditable(True)
    d.form.editors[p.name].setCurrentText("no-such-choice")
    d.accept()
    assert d.result() == 0 and p.name in d.error_label.text()


def test_a_second_window_leaves_the_jobs_to_the_runner_holding_the_lock(qtbot, catalog, catalog_path, tmp_path):
    first = make_window(qtbot, catalog_path, tmp_path)
    second = make_window(qtbot, catalog_path, tmp_path / "b")
    try:
        qtbot.waitUntil(lambda: first.runner.has_lock, timeout=10_000)
        qtbot.waitUntil(lambda: "another runner" in second.statusBar().currentMessage(), timeout=10_000)
        assert not second.runner.has_lock
    finally:
        second.shutdown()
        first.shutdown()
