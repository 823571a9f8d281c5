"""Metric history: re-evaluating appends, the newest per (suite, metric, dataset, device) is
current, `relman metrics` lists current or all measurements, and the GUI shows a metric's
history (marking values measured under load or beside other jobs) and edits the policy with
the CLI's validation, a preview of the gates and an audit event on save."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relman.catalog import Metric


def _evaluate(catalog, version_id: int) -> None:
    from relman.evaluate.job import run
    from relman.jobs.context import JobContext

    ctx = JobContext(catalog, device="cpu")
    try:
        run({"version_id": version_id, "suites": ["size", "latency"], "threads": 1, "batch_sizes": [1],
             "seq_lens": [16], "options": {"min_samples": 10, "warmup": 1}}, ctx)
    finally:
        ctx.cleanup()


@pytest.fixture
def evaluated_twice(catalog, tiny_bert):
    from relman.app.models import import_model

    v = import_model(catalog, tiny_bert, "h")
    _evaluate(catalog, v.id)
    _evaluate(catalog, v.id)
    return catalog, v


def test_two_evaluations_leave_two_measurements_and_the_newest_is_current(evaluated_twice, run_cli):
    catalog, v = evaluated_twice
    history = [m for m in catalog.metrics(v.id, latest=False) if m["name"] == "latency_p50_ms"]
    current = [m for m in catalog.metrics(v.id) if m["name"] == "latency_p50_ms"]
    assert len(history) == 2 and len(current) == 1 and current[0]["id"] == history[-1]["id"]
    assert history[0]["measured_at"] < history[1]["measured_at"]

    r = run_cli("metrics", v.ref, "--all", "--json")
    assert r.exit_code == 0, r.output
    items = json.loads(r.output)
    p50 = [i for i in items if i["name"] == "latency_p50_ms"]
    assert len(p50) == 2 and [i["value"] for i in p50] == [m["value"] for m in history]
    assert set(p50[0]) >= {"name", "value", "suite", "dataset", "context", "measured_at"}
    assert p50[0]["suite"] == "latency" and "load_avg_1m" in p50[0]["context"]
    now = json.loads(run_cli("metrics", v.ref, "--json").output)
    assert [i["value"] for i in now if i["name"] == "latency_p50_ms"] == [history[-1]["value"]]
    text = run_cli("metrics", v.ref, "--all", "--name", "latency_p50_ms").output
    assert text.count("latency_p50_ms") == 2 and "2)" in text.splitlines()[0]


def test_a_metric_on_another_dataset_is_another_current_metric(catalog, tiny_bert):
    from relman.app.models import import_model

    v = import_model(catalog, tiny_bert, "d")
    catalog.add_metrics(v.id, [Metric("quality", "accuracy", 0.8, {"dataset": "a", "device": "cpu"})])
    catalog.add_metrics(v.id, [Metric("quality", "accuracy", 0.7, {"dataset": "b", "device": "cpu"})])
    catalog.add_metrics(v.id, [Metric("quality", "accuracy", 0.9, {"dataset": "a", "device": "cpu"})])
    assert sorted(m["value"] for m in catalog.metrics(v.id) if m["name"] == "accuracy") == [0.7, 0.9]
    assert catalog.metric_values(v.id)["accuracy"] == 0.9  # gates read the newest


# -- GUI ----------------------------------------------------------------------------------------------
@pytest.fixture
def window(qtbot, catalog_path, evaluated_twice, tmp_path: Path):
    pytest.importorskip("pytestqt")
    from PySide6.QtCore import QSettings

    from relman.ui.qt_main import MainWindow

    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat),
                   run_jobs=False)
    qtbot.addWidget(w)
    w.show()
    yield w
    w.shutdown()


def test_gui_shows_a_metrics_history_and_marks_disturbed_values(window, evaluated_twice):
    from PySide6.QtCore import Qt

    from relman.ui.qt_metric_history import DISTURBED

    catalog, v = evaluated_twice
    catalog.add_metrics(v.id, [Metric("latency", "latency_p50_ms", 9.08,
                                      {"device": "cpu", "under_load": True, "load_avg_1m": 5.5, "cpu_count": 2,
                                       "other_jobs": [7, 8], "beside_jobs": True})])
    window.set_selection([v.id])
    view = window.metric_history
    view.show_metric("latency_p50_ms")
    model = view.model
    assert model.rowCount() == 3  # both evaluations and the one measured beside other jobs
    values = [model.cell(r, 3) for r in range(3)]
    assert values[0] == "9.08"  # newest first
    bg = model.data(model.index(0, 0), Qt.ItemDataRole.BackgroundRole)
    assert bg is not None and bg.color() == DISTURBED
    tip = model.data(model.index(0, 0), Qt.ItemDataRole.ToolTipRole)
    assert "under load" in tip and "beside other jobs (7, 8)" in tip
    assert "current" in model.cell(0, 6) and "current" not in model.cell(1, 6)
    assert model.data(model.index(1, 0), Qt.ItemDataRole.BackgroundRole) is None or \
        not model.rows[1]["context"].get("other_jobs")
    assert "1 under load or beside other jobs" in view.title.text()


def test_policy_editor_validates_as_you_type_previews_and_saves_a_revision(window, evaluated_twice):
    catalog, v = evaluated_twice
    window.dialog_runner = lambda d: 0  # open without blocking
    window.set_selection([v.id])
    from relman.ui.qt_policy import open_policy_editor

    ed = open_policy_editor(window)
    assert ed is not None and ed.body is not None and ed.save_button.isEnabled()
    assert "built-in default" in ed.revisions.item(ed.revisions.count() - 1).text()
    body = dict(ed.body)
    body["gates"] = {"candidate": ["latency_p50_ms <= 0.000001"], "staging": [], "production": []}
    body["approvals"] = {}
    bad = json.loads(json.dumps(body))
    bad["gates"]["candidate"] = ["latency_p50_ms <= 1 when sometimes"]
    events = len(catalog.events())
    ed.set_text(json.dumps(bad, indent=2))
    assert ed.body is None and not ed.save_button.isEnabled()
    assert "expected a condition" in ed.status.text() and ed.error.line is not None and ed.error.column > 1
    assert ed.save() is None and catalog.query("SELECT COUNT(*) AS n FROM policies")[0]["n"] == 0
    assert len(catalog.events()) == events
    ed.set_text(json.dumps(body, indent=2))
    assert ed.body is not None
    ed.update_preview()
    assert ed.cell_text(v.ref, "candidate").startswith("fail")  # nothing is that fast
    body["gates"]["candidate"] = ["latency_p50_ms <= 100000"]
    ed.set_text(json.dumps(body, indent=2))
    ed.update_preview()
    assert ed.cell_text(v.ref, "candidate") == "pass"
    assert ed.save() == 1
    edit = [e for e in catalog.events("h") if e["kind"] == "policy-edit"]
    assert len(edit) == 1 and edit[0]["payload"]["policy"]["gates"]["candidate"] == ["latency_p50_ms <= 100000"]
    assert ed.revisions.item(0).text().startswith("revision 1")
