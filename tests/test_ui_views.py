"""The window shell: a view registered with one entry becomes a tab that is refreshed from
the snapshot, themed and screenshotted; one selection is shared by tree, table, board and
plots; opening another catalog leaves nothing of the old one in any view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings  # noqa: E402
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget  # noqa: E402

from ui_support import build_family  # noqa: E402


class CountView(QWidget):
    """A view as a helper would add one: counts versions per phase."""

    name = "counts"
    title = "Counts"
    instances: list["CountView"] = []

    def __init__(self, window: Any) -> None:
        super().__init__()
        self.label = QLabel("")
        QVBoxLayout(self).addWidget(self.label)
        self.refreshed = 0
        self.dark: bool | None = None
        CountView.instances.append(self)

    def refresh(self, state: Any) -> None:
        self.refreshed += 1
        phases: dict[str, int] = {}
        for v in state.snapshot.versions:
            phases[v.phase] = phases.get(v.phase, 0) + 1
        self.label.setText(", ".join(f"{n} {p}" for p, n in sorted(phases.items())))

    def apply_theme(self, dark: bool) -> None:
        self.dark = dark


@pytest.fixture
def family(catalog, tiny_vit):
    return build_family(catalog, tiny_vit)


def make_window(qtbot: Any, catalog_path: Path, tmp_path: Path) -> Any:
    from relman.ui.qt_main import MainWindow

    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat),
                   run_jobs=False)
    qtbot.addWidget(w)
    w.show()
    return w


def test_a_view_is_one_class_plus_one_registry_entry(qtbot, catalog, catalog_path, tmp_path, family,
                                                     monkeypatch):
    from relman.ui import views
    from relman.ui.app import screenshots

    CountView.instances.clear()
    monkeypatch.setattr(views, "VIEWS", [*views.VIEWS, views.ViewSpec(
        "counts", "Counts", f"{__name__}:CountView", lazy=True)])
    w = make_window(qtbot, catalog_path, tmp_path)
    try:
        assert w.tabs.tabText(w.tabs.count() - 1) == "Counts"
        assert not CountView.instances, "a lazy view is built when first shown"
        view = w.show_view("counts")
        assert view is w.counts and isinstance(view, views.View)
        assert view.label.text() == "3 draft" and view.refreshed == 1
        w.set_theme(True)
        assert view.dark is True
        from relman.app.release import promote

        promote(catalog, family["base"].ref, "candidate")
        w.poll()  # the catalog changed: the view on screen is redrawn
        assert view.label.text() == "1 candidate, 2 draft" and view.refreshed == 2
        w.show_view("board")
        w.refresh(force=True)
        assert view.refreshed == 2, "a hidden view waits until it is shown"
        w.show_view("counts")
        assert view.refreshed == 3
        shots = screenshots(w, tmp_path / "shots", views=views.view_names())
        assert "counts" in [p.stem for p in shots]
        w.set_theme(False)
    finally:
        w.shutdown()


def test_one_selection_for_tree_table_board_and_plots(qtbot, catalog_path, tmp_path, family):
    w = make_window(qtbot, catalog_path, tmp_path)
    try:
        pruned, merged = family["pruned"], family["merged"]
        board = w.show_view("board")
        assert board.select_version(pruned.id)  # a click on the board…
        assert w.selected_ids == [pruned.id]
        assert w.versions.selected_ids() == [pruned.id]  # …is the table's selection at once
        compare = w.show_view("compare")
        assert compare.selected == [pruned.id]
        compare.size_panel.click_version(merged.id, add=True)  # Ctrl+click on a plot point
        assert w.selected_ids == [pruned.id, merged.id]
        assert w.versions.selected_ids() == sorted([pruned.id, merged.id])
        w.show_view("board")  # the board shows the first, without collapsing the selection
        assert board.selected_version().id == pruned.id and w.selected_ids == [pruned.id, merged.id]
        top = w.tree.topLevelItem(0)
        item = next(top.child(i) for i in range(top.childCount()) if top.child(i).text(0) == merged.version)
        w.tree.setCurrentItem(item)  # the tree
        assert w.selected_ids == [merged.id] and w.versions.selected_ids() == [merged.id]
        assert board.selected_version().id == merged.id
    finally:
        w.shutdown()


def test_opening_another_catalog_leaves_nothing_of_the_old_one(qtbot, catalog, catalog_path, tmp_path, family):
    from relman.app.jobs import queue_job

    queue_job(catalog, "noop", {}, device="cpu")
    w = make_window(qtbot, catalog_path, tmp_path)
    try:
        w.set_selection([family["base"].id])
        jobs = w.show_view("jobs")
        assert len(jobs.model.jobs) == 1 and jobs.selected_job is not None
        w.show_view("lineage")
        other = tmp_path / "other"
        w.open_catalog(other)
        assert w.selected_ids == [] and w.snapshot.versions == []
        assert w.jobs is not jobs and w.jobs.model.jobs == [] and w.jobs.selected_job is None
        assert w.lineage.nodes == {} and w.versions.model.rowCount() == 0
        assert w.board.card_ids("draft") == [] and w.tree.topLevelItemCount() == 0
        assert w.audit.catalog.root == other and all(e["kind"] != "import" for e in w.audit.events)
    finally:
        w.shutdown()


def test_the_jobs_view_reads_only_the_end_of_a_large_log(qtbot, catalog, catalog_path, tmp_path, monkeypatch):
    from relman.app.jobs import queue_job
    from relman.jobs.queue import log_path_for

    job_id = queue_job(catalog, "noop", {}, device="cpu")
    log = log_path_for(catalog, job_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(f"step {i}: loss 0.{i:05d}\n" for i in range(200_000)), encoding="utf-8")  # ~4 MB
    from relman.app import jobs as app_jobs
    from relman.ui import qt_jobs

    asked: list[int] = []
    real_tail = qt_jobs.tail_file
    monkeypatch.setattr(qt_jobs, "tail_file", lambda path, max_bytes=8192: asked.append(max_bytes)
                        or real_tail(path, max_bytes))
    monkeypatch.setattr(app_jobs, "job_log_tail", lambda *a, **k: pytest.fail("read the whole log"))
    w = make_window(qtbot, catalog_path, tmp_path)
    try:
        jobs = w.show_view("jobs")
        jobs.select_job(job_id)
        jobs._update_details()
        text = jobs.log.toPlainText().splitlines()
        assert text[-1] == "step 199999: loss 0.199999" and len(text) == 60
        assert asked and max(asked) <= 64 * 1024, asked  # only the end of the file is read
    finally:
        w.shutdown()


def test_datasets_and_overview_views(qtbot, catalog, catalog_path, tmp_path, family):
    from relman.app.datasets import register_demo_digits
    from relman.app.release import approve, promote, rollout

    register_demo_digits(catalog, "digits", n=60)
    base, pruned = family["base"], family["pruned"]
    for to in ("candidate", "staging", "production"):
        if to != "candidate":
            approve(catalog, base.ref, to, by="reviewer")
        if to == "production":
            rollout(catalog, base.ref, 100.0)
        promote(catalog, base.ref, to, why="test", override=True)
    promote(catalog, pruned.ref, "candidate", why="test", override=True)
    promote(catalog, pruned.ref, "staging", why="test", override=True)
    rollout(catalog, pruned.ref, 10.0)
    w = make_window(qtbot, catalog_path, tmp_path)
    try:
        ds = w.show_view("datasets")
        cells = [ds.table.item(0, c).text() for c in range(ds.table.columnCount())]
        assert cells[0] == "digits" and cells[1] == "npz" and cells[3] == "60" and "test" in cells[5], cells
        ov = w.show_view("overview")
        row = {ov.table.horizontalHeaderItem(c).text(): ov.table.item(0, c).text()
               for c in range(ov.table.columnCount())}
        assert row["Model"] == "digits-vit" and row["Production"] == base.version
        assert "accuracy 0.91" in row["Key metrics"]
        assert row["Staging (canary)"] == f"{pruned.version} (10%)" and row["Versions"] == "3"
        assert row["Next gate"] == w.release.gate_status(w.snapshot.by_id()[pruned.id])[1]
        ov.open_row(0)  # double-click: the model on the board, its production version selected
        assert w.current_view_name() == "board" and w.selected_ids == [base.id]
        assert w.board.selected_version().id == base.id
    finally:
        w.shutdown()


def test_help_lists_every_shortcut_and_about_names_the_catalog(qtbot, catalog_path, tmp_path, family):
    from PySide6.QtWidgets import QMessageBox

    w = make_window(qtbot, catalog_path, tmp_path)
    try:
        w.actions_by_key["shortcuts"].trigger()
        from relman.ui.qt_help import ShortcutsDialog

        sheet = next(d for d in w.findChildren(ShortcutsDialog))
        rows = {sheet.table.item(r, 0).text(): sheet.table.item(r, 1).text() for r in range(sheet.table.rowCount())}
        assert rows["Promote"] == "Ctrl+P" and rows["Quit"] == "Ctrl+Q" and rows["Keyboard shortcuts"] == "F1"
        assert len(rows) == len([a for a in w.actions() if a.shortcut().toString()])
        w.actions_by_key["about"].trigger()
        about = next(b for b in w.findChildren(QMessageBox) if b.objectName() == "about")
        assert str(catalog_path) in about.text() and "relman 0." in about.text()
        assert w.actions_by_key["quit"].shortcut().toString() == "Ctrl+Q"
        w.actions_by_key["quit"].trigger()
        assert not w.isVisible()
    finally:
        w.shutdown()
