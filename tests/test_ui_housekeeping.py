"""The GUI's housekeeping: delete with a bytes-freed confirmation (and refusals), tags,
the search language in the filter box, the disk view + status bar, the import dialog's
proposed name and explicit new-architecture choice. pytest-qt, offscreen."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings, Qt  # noqa: E402

from housekeeping_support import planted_version  # noqa: E402
from relman.catalog import Metric  # noqa: E402
from ui_support import accept_with  # noqa: E402


@pytest.fixture
def planted(catalog, tmp_path):
    a = planted_version(catalog, tmp_path, "m", "a", shared=b"S" * 4000, unique=b"A" * 3000)
    b = planted_version(catalog, tmp_path, "m", "b", shared=b"S" * 4000, unique=b"B" * 2000)
    catalog.add_metrics(a.id, [Metric("quality", "accuracy", 0.95)])
    catalog.add_metrics(b.id, [Metric("quality", "accuracy", 0.85)])
    return {"a": a, "b": b}


@pytest.fixture
def window(qtbot, catalog_path, planted, tmp_path):
    from relman.ui.qt_main import MainWindow

    # jobs run: delete, archive, restore and gc are jobs in worker processes
    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat),
                   run_jobs=True, cpu_slots=1, poll_ms=200, runner_ms=150)
    qtbot.addWidget(w)
    w.show()
    yield w
    w.shutdown()


@pytest.mark.heavy  # the delete is a job: a worker process
def test_delete_confirms_bytes_freed_then_runs_a_delete_job(window, qtbot, planted, catalog):
    from relman.ui.qt_delete import DeleteDialog

    seen: dict[str, str] = {}

    def fill(d: DeleteDialog) -> None:
        seen["summary"] = d.summary.text()
        d.why.setText("superseded")

    window.set_selection([planted["a"].id])
    window.dialog_runner = accept_with(fill)
    window.actions_by_key["delete"].trigger()
    assert "frees 2.9 KB" in seen["summary"] and "3.9 KB shared" in seen["summary"], seen
    qtbot.waitUntil(lambda: not window.busy(), timeout=90_000)
    assert window.messages[-1][0] == "info", window.messages
    window.refresh(force=True)
    assert [v.ref for v in window.snapshot.versions] == [planted["b"].ref]
    assert catalog.tombstone(planted["a"].id)["why"] == "superseded"


def test_delete_of_production_shows_the_refusal_and_cannot_be_confirmed(window, planted, catalog):
    from relman.app.release import promote
    from relman.ui.qt_delete import DeleteDialog

    for p in ("candidate", "staging", "production"):
        promote(catalog, planted["b"].ref, p, why="t", override=True)
    window.refresh(force=True)
    window.set_selection([planted["b"].id])
    seen: dict[str, object] = {}

    def fill(d: DeleteDialog) -> None:
        seen["error"] = d.error_label.text()
        d.why.setText("try anyway")

    window.dialog_runner = accept_with(fill)
    window.actions_by_key["delete"].trigger()
    assert "is in production" in str(seen["error"])
    assert not window.busy() and len(catalog.versions("m")) == 2


def test_tags_edited_in_the_gui_and_the_filter_speaks_the_search_language(window, planted, catalog):
    from relman.ui.qt_tags import TagsDialog

    window.set_selection([planted["b"].id])
    window.dialog_runner = accept_with(lambda d: d.tags.setText("fast paper"))
    window.actions_by_key["tags"].trigger()
    assert catalog.tags(planted["b"].id) == ["fast", "paper"]
    model = window.versions.model
    tags_col = [c[0] for c in model.columns].index("Tags")
    assert {model.index(r, tags_col).data() for r in range(model.rowCount())} == {"", "fast paper"}
    window.dialog_runner = accept_with(lambda d: d.tags.setText("fast"))
    window.actions_by_key["tags"].trigger()
    assert catalog.tags(planted["b"].id) == ["fast"]
    bad = TagsDialog("m@1.0.0", [])
    bad.tags.setText("ok bad\u200bname")
    bad.accept()
    assert bad.result() == 0 and "invisible" in bad.error_label.text()

    def shown(text: str) -> list[str]:
        window.versions.filter_edit.setText(text)
        return [window.versions.model.rows[i].ref for i in range(window.versions.proxy.rowCount())]

    assert shown("tag:fast") == [planted["b"].ref]
    assert shown("accuracy>0.9") == [planted["a"].ref]
    assert shown("accuracy>") == [] and "not a metric condition" in window.versions.model.filter_error
    assert "not a metric condition" in window.versions.filter_edit.toolTip()
    assert shown("m@1.1") == [planted["b"].ref]
    assert shown("") == [planted["a"].ref, planted["b"].ref]


def test_disk_view_measures_in_a_child_process_and_status_bar_warns(window, qtbot, catalog):
    from relman.app.disk import WARN_FREE_KEY

    assert "free" in window.disk_status.text() and not window.disk_status.low
    with qtbot.waitSignal(window.disk.report_ready, timeout=90_000) as sig:
        window.show_view("disk")
    report = sig.args[0]
    assert report["totals"]["blob_bytes"] == 4000 + 3000 + 2000
    assert window.disk.proxy.rowCount() == 1  # one model
    window.disk.kind.setCurrentText("Versions")
    assert window.disk.proxy.rowCount() == 2
    window.disk.table.sortByColumn(2, Qt.SortOrder.DescendingOrder)  # by unique bytes
    assert window.disk.proxy.index(0, 0).data() == "m@1.0.0"
    window.disk.table.sortByColumn(2, Qt.SortOrder.AscendingOrder)
    assert window.disk.proxy.index(0, 0).data() == "m@1.1.0"
    assert [x[0] for x in window.disk.chart.items] == ["m@1.0.0", "m@1.1.0"]
    window.grab().save(str(Path(catalog.root) / "disk.png"))

    catalog.set_setting(WARN_FREE_KEY, 1 << 62)  # more than any disk has: must warn
    window.disk_status.follow(lambda: window.catalog, interval_ms=50)  # no catalog change: the timer notices
    qtbot.waitUntil(lambda: window.disk_status.low, timeout=30_000)
    assert "low disk space" in window.disk_status.text()


def test_import_dialog_proposes_a_new_name_and_offers_the_explicit_choice(planted, tmp_path):
    from relman.ui.qt_dialogs import ImportDialog

    d = ImportDialog(["m", "digits-vit"])
    d.path.setText(str(tmp_path / "My BERT"))
    assert d.model.currentText() == "my-bert"
    d.path.setText(str(tmp_path / "digits-vit"))
    assert d.model.currentText() == "digits-vit-2"  # never silently an existing model
    d.model.setCurrentText("m")  # the user's explicit pick is kept
    d.path.setText(str(tmp_path / "other"))
    assert d.model.currentText() == "m"
    d.new_architecture.setChecked(True)
    d.accept()
    assert d.result_values["new_architecture"] is True and d.result_values["model"] == "m"


@pytest.mark.heavy  # archive and restore are jobs: worker processes
def test_archive_then_restore_from_the_window(window, qtbot, planted, catalog, tmp_path):
    window.set_selection([planted["a"].id])
    window.dialog_runner = accept_with(lambda d: d.fields["Folder"].setText(str(tmp_path / "cold")))
    window.actions_by_key["archive"].trigger()
    qtbot.waitUntil(lambda: not window.busy(), timeout=90_000)
    assert window.messages[-1][0] == "info", window.messages
    assert catalog.get_version(planted["a"].id).archived_to == str((tmp_path / "cold").resolve())
    window.dialog_runner = accept_with(lambda d: None)
    window.actions_by_key["archive"].trigger()  # the same action offers the way back
    qtbot.waitUntil(lambda: not window.busy(), timeout=90_000)
    assert window.messages[-1][0] == "info", window.messages
    assert catalog.get_version(planted["a"].id).archived_to is None and catalog.verify_store() == []


@pytest.mark.heavy  # gc is a job: a worker process
def test_disk_views_collect_garbage_button_runs_a_gc_job(window, qtbot):
    """The button was connected in dead code after a `return` (found by ruff's F821): clicking
    it did nothing. Clicked as a user would, it now queues gc and reports what was freed."""
    window.show_view("disk")
    window.dialog_runner = accept_with(lambda d: None)  # the dry run's confirmation, if it finds anything
    qtbot.mouseClick(window.disk.gc_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: any("Garbage collected" in m[1] or "nothing to remove" in m[1]
                                for m in window.messages), timeout=90_000)
