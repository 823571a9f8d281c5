"""The main window on a catalog built by the real core: what each view shows, filtering and
sorting, import through the dialog (a real child `relman import`), errors as messages,
settings and themes. pytest-qt, offscreen."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings, Qt  # noqa: E402

from ui_support import accept_with, build_family  # noqa: E402


@pytest.fixture
def settings(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def family(catalog, tiny_vit):
    return build_family(catalog, tiny_vit)


@pytest.fixture
def window(qtbot, catalog_path, family, settings):
    from relman.ui.qt_main import MainWindow

    w = MainWindow(catalog_path, settings=settings, run_jobs=False)
    qtbot.addWidget(w)
    w.show()
    yield w
    w.shutdown()


@pytest.fixture
def working_window(qtbot, catalog_path, family, settings):
    """A window that runs jobs: imports, datasets and exports are jobs in worker processes."""
    from relman.ui.qt_main import MainWindow

    w = MainWindow(catalog_path, settings=settings, run_jobs=True, cpu_slots=1, poll_ms=200, runner_ms=150)
    qtbot.addWidget(w)
    w.show()
    yield w
    w.shutdown()


def test_versions_table_shows_every_version_with_metrics(window, family):
    model = window.versions.model
    assert model.rowCount() == 3
    headers = [model.headerData(c, Qt.Orientation.Horizontal) for c in range(model.columnCount())]
    for h in ("Model", "Version", "Phase", "Size", "Params", "Recipe", "Created", "accuracy", "latency_p95_ms"):
        assert h in headers
    acc_col = headers.index("accuracy")
    recipe_col = headers.index("Recipe")
    by_version = {model.index(r, 1).data(): r for r in range(model.rowCount())}
    assert model.index(by_version["1.0.0"], acc_col).data() == "0.91"
    assert model.index(by_version[family["merged"].version], recipe_col).data() == "merge-fedavg"
    # sorting by a metric (header click path: the proxy delegates to the source model)
    window.versions.table.sortByColumn(acc_col, Qt.SortOrder.DescendingOrder)
    shown = [window.versions.proxy.index(r, acc_col).data() for r in range(window.versions.proxy.rowCount())]
    assert shown == ["0.91", "0.88", "0.8"]
    window.versions.table.sortByColumn(acc_col, Qt.SortOrder.AscendingOrder)
    assert window.versions.proxy.index(0, acc_col).data() == "0.8"


def test_filtering_by_text_and_phase(window, qtbot):
    qtbot.keyClicks(window.versions.filter_edit, "prune")
    assert window.versions.proxy.rowCount() == 1
    assert "1 of 3" in window.versions.count_label.text()
    window.versions.filter_edit.clear()
    assert window.versions.proxy.rowCount() == 3
    window.versions.phase_filter.setCurrentText("production")
    assert window.versions.proxy.rowCount() == 0
    window.versions.phase_filter.setCurrentText("draft")
    assert window.versions.proxy.rowCount() == 3


def test_tree_lineage_board_and_compare_show_the_family(window, family):
    top = window.tree.topLevelItem(0)
    assert top.text(0) == "digits-vit" and top.childCount() == 3
    # lineage: three nodes, the merge has two incoming edges, edges labelled by recipe
    window.show_view("lineage")
    assert set(window.lineage.nodes) == {family[k].id for k in ("base", "pruned", "merged")}
    incoming = [c for _, c in window.lineage.edges_drawn if c == family["merged"].id]
    assert len(incoming) == 2
    assert "prune-magnitude" in window.lineage.edge_labels and "merge-fedavg" in window.lineage.edge_labels
    # board: all three are drafts, each card carries its key metrics and a gate badge
    window.show_view("board")
    assert sorted(window.board.card_ids("draft")) == sorted(v.id for v in family.values())
    phase, card = window.board.find_card(family["base"].id)
    assert "accuracy: 0.91" in card.metrics_label.text()
    assert card.gate_state in ("pass", "fail", "unknown", "skipped")  # the default policy checks nothing on a base
    # compare: built on demand; one point per version on both plots; the front is non-dominated
    compare = window.show_view("compare")
    assert compare.size_panel.x_combo.currentText() == "deployable_size_mb"  # = size_mb for whole models
    assert compare.size_panel.y_combo.currentText() == "accuracy"
    assert compare.size_panel.points_shown == 3
    assert compare.latency_panel.x_combo.currentText() == "latency_p95_ms"
    # accuracy up, size down: base (0.91, 0.080) and pruned (0.88, 0.041) are on the front, merged is not
    assert set(compare.size_panel.front_ids) == {family["base"].id, family["pruned"].id}
    # clicking a point selects that version everywhere
    compare.size_panel.click_version(family["pruned"].id)
    assert window.selected_ids == [family["pruned"].id]
    assert [window.versions.proxy.version_id(i.row()) for i in window.versions.table.selectionModel().selectedRows()] == \
        [family["pruned"].id]
    compare.size_panel.click_version(family["base"].id, add=True)
    assert compare.table.columnCount() == 2
    delta_cell = compare.table.item(2 + 0, 1).text()  # size_mb row, second column: value and delta
    assert "(+" in delta_cell or "(-" in delta_cell


def test_import_through_dialog_runs_an_import_job(working_window, qtbot, tiny_vit, catalog):
    from relman.ui.qt_dialogs import ImportDialog

    def fill(d: ImportDialog) -> None:
        d.path.setText(str(tiny_vit))
        d.model.setCurrentText("second-vit")

    window = working_window
    window.dialog_runner = accept_with(fill)
    window.actions_by_key["import"].trigger()
    job = catalog.query("SELECT id, kind FROM jobs ORDER BY id DESC")[0]
    assert job["kind"] == "import_model" and window.busy()
    qtbot.waitUntil(lambda: not window.busy(), timeout=90_000)
    assert any(v.model == "second-vit" for v in window.snapshot.versions), window.messages
    assert window.messages[-1][0] == "info" and "second-vit@1.0.0" in window.messages[-1][1]
    assert window.tree.topLevelItemCount() == 2
    assert catalog.query("SELECT result_version_id FROM jobs WHERE id = ?", [job["id"]])[0]["result_version_id"]


def test_import_of_a_bad_path_shows_the_error_and_adds_nothing(working_window, qtbot, tmp_path, tiny_vit):
    window = working_window
    before = window.versions.model.rowCount()
    window.guarded("import", window.work.import_model, str(tmp_path / "nope"), "ghost")
    level, text = window.messages[-1]  # refused before any job is queued
    assert level == "error" and "nope" in text and not window.busy()
    assert window.open_boxes, "the error is shown in a message box"
    # a file that exists but is no model: the job fails and its one-line reason is shown
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model at all")
    window.work.import_model(str(junk), "ghost")
    qtbot.waitUntil(lambda: not window.busy(), timeout=90_000)
    level, text = window.messages[-1]
    assert level == "error" and "junk.safetensors" in text and "failed" in text
    assert window.versions.model.rowCount() == before


def test_dialog_validation_keeps_dialog_open_with_the_reason(qtbot):  # qtbot: a QApplication even when run alone
    from relman.ui.qt_dialogs import ImportDialog

    d = ImportDialog(["m"])
    d.accept()
    assert d.result() == 0 and "choose a model" in d.error_label.text()


def test_actions_without_a_selection_explain_instead_of_crashing(window):
    window.set_selection([])
    window.actions_by_key["compress"].trigger()
    assert window.messages[-1][0] == "error" and "select a version first" in window.messages[-1][1]
    window.actions_by_key["evaluate"].trigger()
    assert "select a version first" in window.messages[-1][1]


def test_every_action_is_wired_or_says_why(window):
    for key, act in window.actions_by_key.items():
        assert act.isEnabled() or act.toolTip().startswith("Not available"), key


def test_settings_remember_layout_theme_tab_and_catalog(qtbot, catalog_path, family, settings):
    from relman.ui.qt_main import MainWindow

    w = MainWindow(catalog_path, settings=settings, run_jobs=False)
    qtbot.addWidget(w)
    w.show()
    w.models_dock.hide()
    w.tabs.setCurrentIndex(3)
    w.set_theme(True)
    w.close()
    w2 = MainWindow(catalog_path, settings=settings, run_jobs=False)
    qtbot.addWidget(w2)
    w2.show()
    assert w2.tabs.currentIndex() == 3
    assert w2.dark
    assert w2.restored_layout, "saved geometry and window state restored"
    assert not w2.models_dock.isVisible(), "dock layout (window state) restored"
    assert Path(settings.value("last_catalog")) == catalog_path.resolve()
    from relman.ui.app import choose_catalog

    assert choose_catalog(None, settings) == catalog_path.resolve()
    w2.set_theme(False)
    w2.shutdown()


def test_audit_view_lists_events_and_verifies_the_chain(window, catalog):
    window.tabs.setCurrentIndex(5)
    assert window.audit.table.rowCount() >= 5
    kinds = {window.audit.table.item(r, 3).text() for r in range(window.audit.table.rowCount())}
    assert "import" in kinds and "metrics" in kinds
    window.actions_by_key["verify"].trigger()
    assert "intact" in window.audit.result.text()
    # tamper with an event: verify now says which one is broken
    catalog.conn.execute("UPDATE events SET actor = 'mallory' WHERE seq = 2")
    ok, text = window.audit.verify()
    assert not ok and "BROKEN" in text and "event 2" in text


def test_screenshots_of_each_main_view(window, tmp_path):
    from relman.ui.app import MAIN_VIEWS, screenshots

    paths = screenshots(window, tmp_path / "shots")
    assert [p.stem for p in paths] == list(MAIN_VIEWS)
    for p in paths:
        assert p.stat().st_size > 5000


def test_register_dataset_through_the_dialog(working_window, qtbot, tmp_path):
    from relman.data.demo import sentiment_csv
    from relman.ui.qt_dialogs import DatasetDialog

    window = working_window
    csv = sentiment_csv(tmp_path / "reviews.csv", n=40)

    def fill(d: DatasetDialog) -> None:
        d.path.setText(str(csv))
        d.name.setText("reviews")
        d.group_col.setCurrentText("group")  # a column chooser (the file's columns offered)
        d.test.setValue(0.25)

    window.dialog_runner = accept_with(fill)
    window.actions_by_key["dataset"].trigger()
    qtbot.waitUntil(lambda: not window.busy(), timeout=90_000)
    assert window.messages[-1][0] == "info", window.messages
    assert "reviews" in window.work.datasets()
    # a column that is not there: the reader's one-line reason is shown, nothing is stored
    window.work.register_dataset(str(csv), "broken", label_col="no_such_column")
    qtbot.waitUntil(lambda: not window.busy(), timeout=90_000)
    level, text = window.messages[-1]
    assert level == "error" and "no_such_column" in text
    assert "broken" not in window.work.datasets()


def test_model_card_and_bundle_export_from_the_window(working_window, family, tmp_path, monkeypatch, qtbot):
    from relman.app.bundles import create_key

    window = working_window
    monkeypatch.setenv("RELMAN_KEYS_DIR", str(tmp_path / "keys"))
    ref = family["base"].ref
    card = window.work.write_model_card(ref, str(tmp_path / "README.md"))
    text = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "digits-vit" in text and "accuracy" in text
    assert window.messages[-1][0] == "info" and str(card or tmp_path / "README.md") in window.messages[-1][1]
    # no signing key yet: the release layer's reason is shown, nothing is written
    window.guarded("export", window.work.export_bundle, ref, str(tmp_path / "b.relman"))
    assert window.messages[-1][0] == "error"
    assert not (tmp_path / "b.relman").exists()
    create_key("lab")
    window.guarded("export", window.work.export_bundle, ref, str(tmp_path / "b.relman"))
    assert window.busy(), window.messages[-1]  # an export job, in a worker process
    qtbot.waitUntil(lambda: not window.busy(), timeout=90_000)
    assert window.messages[-1][0] == "info" and "Exported" in window.messages[-1][1], window.messages[-1]
    assert (tmp_path / "b.relman").stat().st_size > 1000


def test_optimize_and_evaluate_dialogs_queue_real_jobs(window, family, catalog):
    from relman.app.datasets import register_demo_digits
    from relman.ui.qt_dialogs import EvaluateDialog, SimpleFormDialog

    register_demo_digits(catalog, "digits", n=60)
    window.set_selection([family["base"].id])

    def fill(d):
        if isinstance(d, SimpleFormDialog):
            d.fields["Dataset"].setCurrentText("digits")
            d.fields["Max accuracy drop"].setValue(0.02)
        elif isinstance(d, EvaluateDialog):
            d.dataset.setCurrentText("digits")

    window.dialog_runner = accept_with(fill)
    window.actions_by_key["optimize"].trigger()
    assert window.messages[-1][0] == "info", window.messages[-1]
    job = catalog.query("SELECT kind, params FROM jobs ORDER BY id DESC")[0]
    assert job["kind"] == "optimize" and '"max_drop": 0.02' in job["params"]
    window.actions_by_key["evaluate"].trigger()
    assert window.messages[-1][0] == "info", window.messages[-1]
    assert catalog.query("SELECT kind FROM jobs ORDER BY id DESC")[0]["kind"] == "evaluate"
    # the jobs panel lists both, queued (no runner in this window)
    jobs = window.show_view("jobs")
    assert [j["status"] for j in jobs.model.jobs[:2]] == ["queued", "queued"]
    jobs.select_job(jobs.model.jobs[0]["id"])
    assert jobs.cancel_btn.isEnabled()


def test_resources_resolve_in_a_checkout_and_in_a_frozen_layout(tmp_path, monkeypatch):
    import sys

    from relman.errors import NotFound
    from relman.ui.qt_main import app_icon
    from relman.ui.resources import resource_path

    assert resource_path("themes", "dark.qss").is_file()
    assert not app_icon().isNull()
    frozen = tmp_path / "bundle"
    (frozen / "resources" / "themes").mkdir(parents=True)
    (frozen / "resources" / "themes" / "light.qss").write_text("/* frozen */", encoding="utf-8")
    monkeypatch.setattr(sys, "_MEIPASS", str(frozen), raising=False)
    assert resource_path("themes", "light.qss") == frozen / "resources" / "themes" / "light.qss"
    with pytest.raises(NotFound, match="no-such.qss"):
        resource_path("themes", "no-such.qss")
