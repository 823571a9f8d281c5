"""The main window: model tree, versions table, release board, compare, lineage, jobs, audit.

How it stays responsive: the window reads the catalog (its only channel to workers) on a
QTimer with two one-row aggregate queries (`catalog_token`, `jobs_token`) and rebuilds views
only when those change; the job runner is driven by `Runner.tick()` on another QTimer; work
that needs torch or heavy readers happens in worker processes (queued jobs) or in a child
`relman` process (imports, dataset registration), never in this process. Errors that users
cause (`RelmanError`) are shown as non-blocking message boxes at the action boundary.
"""

from __future__ import annotations

import functools
import os
import traceback
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QByteArray, QProcess, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QIcon, QKeySequence
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDialog, QDockWidget, QDoubleSpinBox, QFileDialog,
                               QHBoxLayout, QHeaderView, QLabel, QLineEdit, QMainWindow, QMessageBox,
                               QPlainTextEdit, QTableView, QTabWidget, QToolBar, QTreeWidget, QTreeWidgetItem,
                               QVBoxLayout, QWidget)

from relman.catalog import Catalog, open_catalog
from relman.errors import RelmanError
from relman.ui import backends
from relman.ui.qt_audit import AuditView
from relman.ui.qt_board import NEXT_PHASE, ReleaseBoard
from relman.ui.qt_dialogs import (CompressDialog, DatasetDialog, EvaluateDialog, ImportDialog, PromoteDialog,
                                  SimpleFormDialog, report_passed)
from relman.ui.qt_archive import archive_or_restore_selected
from relman.ui.qt_delete import delete_selected
from relman.ui.qt_disk import DiskStatusLabel, DiskView
from relman.ui.qt_lineage import LineageView
from relman.ui.qt_tags import edit_tags
from relman.ui.qt_models import PHASE_COLORS, VersionsFilterProxy, VersionsTableModel
from relman.ui.resources import read_text, resource_path
from relman.ui.snapshot import PHASE_ORDER, Snapshot, VersionRow, catalog_token, jobs_token, load_snapshot

TABS = ("versions", "board", "compare", "lineage", "jobs", "audit", "disk")
ACTION_BACKENDS = {
    "import": "import_model", "dataset": "register_dataset", "compress": "queue_compression",
    "evaluate": "queue_evaluation", "optimize": "optimize", "export": "export_bundle", "card": "write_model_card",
    "promote": "promote", "rollback": "rollback",
}


def default_settings() -> QSettings:
    path = os.environ.get("RELMAN_GUI_SETTINGS")
    if path:
        return QSettings(path, QSettings.Format.IniFormat)
    return QSettings("relman", "relman")


class MainWindow(QMainWindow):
    snapshot_changed = Signal()
    jobs_changed = Signal()
    message_shown = Signal(str, str)  # level, text

    def __init__(self, catalog_path: Path | str, *, settings: QSettings | None = None, run_jobs: bool = True,
                 poll_ms: int = 400, runner_ms: int = 300, cpu_slots: int | None = None) -> None:
        super().__init__()
        self.settings = settings or default_settings()
        self.catalog_path = Path(catalog_path)
        self.catalog: Catalog = open_catalog(self.catalog_path)
        self.snapshot: Snapshot = Snapshot([], [], [])
        self.selected_ids: list[int] = []
        self.messages: list[tuple[str, str]] = []
        self.open_boxes: list[QMessageBox] = []
        self.processes: list[QProcess] = []
        self.dialog_runner: Callable[[QDialog], int] = lambda d: d.exec()
        self.dark = False
        self._catalog_token: tuple[Any, ...] | None = None
        self._jobs_token: tuple[Any, ...] | None = None
        self._gate_cache: dict[tuple[Any, int], tuple[str, str]] = {}
        self.runner: Any = None
        self.runner_error = ""
        self._dirty: set[str] = set()
        self._focus_model: str | None = None

        self.setWindowTitle(f"relman — {self.catalog.root}")
        self.setWindowIcon(app_icon())
        self._build_views()
        self._build_actions()
        self.reasons = backends.status()
        self._apply_availability()
        self._restore_settings()
        self.refresh(force=True)

        self.poll_timer = QTimer(self)
        self.poll_timer.setInterval(poll_ms)
        self.poll_timer.timeout.connect(self.poll)
        self.poll_timer.start()
        self.runner_timer = QTimer(self)
        self.runner_timer.setInterval(runner_ms)
        self.runner_timer.timeout.connect(self.tick_runner)
        if run_jobs:
            self._start_runner(cpu_slots)

    # -- construction -------------------------------------------------------------------------
    def _build_views(self) -> None:
        self.tabs = QTabWidget()
        self.tabs.setObjectName("tabs")
        self.setCentralWidget(self.tabs)
        # Versions: filter bar + table
        self.versions_model = VersionsTableModel(self)
        self.versions_proxy = VersionsFilterProxy(self)
        self.versions_proxy.setSourceModel(self.versions_model)
        self.table = QTableView()
        self.table.setObjectName("versions-table")
        self.table.setModel(self.versions_proxy)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)  # no per-row sizing
        self.table.verticalHeader().setDefaultSectionSize(24)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setDefaultSectionSize(110)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._on_table_selection())
        # filtering and sorting reset the model: put the selection back afterwards
        self.versions_model.modelReset.connect(lambda: self._select_rows(set(self.selected_ids)))
        self.filter_edit = QLineEdit()
        self.filter_edit.setObjectName("filter")
        self.filter_edit.setPlaceholderText("Filter versions: words, tag:fast, recipe:int8, accuracy>0.9… (Ctrl+F)")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.textChanged.connect(lambda t: self.versions_proxy.set_filter(text=t) or self._update_count())
        self.phase_filter = QComboBox()
        self.phase_filter.setObjectName("phase-filter")
        self.phase_filter.addItems(["all phases", *PHASE_ORDER])
        self.phase_filter.currentTextChanged.connect(
            lambda t: self.versions_proxy.set_filter(phase="" if t == "all phases" else t) or self._update_count())
        self.count_label = QLabel("")
        self.count_label.setObjectName("hint")
        vw = QWidget()
        vl = QVBoxLayout(vw)
        bar = QHBoxLayout()
        bar.addWidget(self.filter_edit, 1)
        bar.addWidget(self.phase_filter)
        bar.addWidget(self.count_label)
        vl.addLayout(bar)
        vl.addWidget(self.table, 1)
        self.tabs.addTab(vw, "Versions")
        # The other views
        self.board = ReleaseBoard(self.gate_status)
        self.board.transition_requested.connect(self.request_transition)
        self.board.rollback_requested.connect(self.request_rollback)
        self.board.rollout_requested.connect(self.request_rollout)
        self.board.approve_requested.connect(self.request_approve)
        self.board.selection_changed.connect(self.set_selection)
        self.tabs.addTab(self.board, "Release board")
        # Compare and Jobs use pyqtgraph (~0.5 s to import): built when first shown, so the
        # window itself appears fast.
        self._compare: Any = None
        self._jobs: Any = None
        self.tabs.addTab(QWidget(), "Compare")
        self.lineage = LineageView()
        self.lineage.node_clicked.connect(lambda vid: self.set_selection([vid]))
        self.tabs.addTab(self.lineage, "Lineage")
        self.tabs.addTab(QWidget(), "Jobs")
        self.tabs.currentChanged.connect(self._on_tab_changed)
        self.audit = AuditView()
        self.audit.catalog = self.catalog
        self.tabs.addTab(self.audit, "Audit")
        self.disk = DiskView(lambda: self.catalog.root)  # measured by a child `relman du` when shown
        self.disk.gc_requested.connect(lambda: self.guarded("gc", self.collect_garbage))
        self.tabs.addTab(self.disk, "Disk")
        self.disk_status = DiskStatusLabel()
        self.statusBar().addPermanentWidget(self.disk_status)
        self.disk_status.follow(lambda: self.catalog)
        # Model tree dock
        self.tree = QTreeWidget()
        self.tree.setObjectName("model-tree")
        self.tree.setHeaderLabels(["Model / version", "Phase"])
        self.tree.itemSelectionChanged.connect(self._on_tree_selection)
        dock = QDockWidget("Models", self)
        dock.setObjectName("models-dock")
        dock.setWidget(self.tree)
        self.tree.setMinimumWidth(190)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)
        self.models_dock = dock
        from relman.ui.qt_metric_history import install_metric_history

        self.metric_history = install_metric_history(self)
        self.statusBar().showMessage("Ready")

    @property
    def compare(self) -> Any:
        if self._compare is None:
            
            from relman.ui.qt_compare import CompareView

            view = CompareView()
            view.selection_requested.connect(self.set_selection)
            view.set_theme(self.dark)
            self._compare = view
            self._install_tab("compare", view)
            view.set_snapshot(self.snapshot, self.current_model())
            view.set_selection(list(self.selected_ids))
            self._dirty.discard("compare")
        return self._compare

    @property
    def jobs(self) -> Any:
        if self._jobs is None:
            
            from relman.ui.qt_jobs import JobsView

            view = JobsView()
            view.cancel_requested.connect(self.cancel_job)
            view.retry_requested.connect(self.retry_job)
            view.set_theme(self.dark)
            view.apply_availability(self.reasons)
            self._jobs = view
            self._install_tab("jobs", view)
            view.refresh(self.catalog)
        return self._jobs

    def _install_tab(self, name: str, widget: QWidget) -> None:
        i = TABS.index(name)
        current = self.tabs.currentIndex()
        title = self.tabs.tabText(i)
        self.tabs.blockSignals(True)
        old = self.tabs.widget(i)
        self.tabs.removeTab(i)
        self.tabs.insertTab(i, widget, title)
        self.tabs.setCurrentIndex(current)
        self.tabs.blockSignals(False)
        old.deleteLater()

    def _on_tab_changed(self, index: int) -> None:
        if TABS[index] == "compare":
            self.compare  # noqa: B018  (builds it)
        elif TABS[index] == "jobs":
            self.jobs  # noqa: B018
        elif TABS[index] == "disk":
            self.disk.refresh_if_stale()
        self._refresh_view(TABS[index])

    def _build_actions(self) -> None:
        self.actions_by_key: dict[str, QAction] = {}
        spec = [
            ("import", "Import model…", "Ctrl+I", self.action_import),
            ("dataset", "Register dataset…", "Ctrl+D", self.action_register_dataset),
            ("compress", "Compress…", "Ctrl+K", self.action_compress),
            ("evaluate", "Evaluate…", "Ctrl+E", self.action_evaluate),
            ("optimize", "Optimize…", "Ctrl+Shift+O", self.action_optimize),
            ("promote", "Promote…", "Ctrl+P", self.action_promote),
            ("rollback", "Roll back production", "Ctrl+Shift+R", self.action_rollback),
            ("export", "Export bundle…", "Ctrl+Shift+E", self.action_export),
            ("card", "Write model card…", "Ctrl+Shift+M", self.action_model_card),
            ("verify", "Verify audit chain", "Ctrl+Shift+V", self.action_verify),
            ("policy", "Edit release policy…", "Ctrl+Shift+L", lambda: _open_policy_editor(self)),
            ("refresh", "Refresh", "F5", lambda: self.refresh(force=True)),
            ("theme", "Toggle dark theme", "Ctrl+T", lambda: self.set_theme(not self.dark)),
            ("open", "Open catalog…", "Ctrl+O", self.action_open_catalog),
            ("find", "Find versions", "Ctrl+F", self._focus_filter),
            ("delete", "Delete version…", "Del", lambda: delete_selected(self)),
            ("tags", "Edit tags…", "Ctrl+Shift+T", lambda: edit_tags(self)),
            ("gc", "Collect garbage", "", self.collect_garbage),
            ("archive", "Archive / restore…", "", lambda: archive_or_restore_selected(self)),
        ]
        for key, text, shortcut, slot in spec:
            act = QAction(text, self)
            act.setObjectName(f"action-{key}")
            act.setShortcut(QKeySequence(shortcut))
            act.triggered.connect(functools.partial(self._run_action, key, slot))
            self.actions_by_key[key] = act
            self.addAction(act)
        for i, name in enumerate(TABS):
            act = QAction(f"Show {name}", self)
            act.setShortcut(QKeySequence(f"Ctrl+{i + 1}"))
            act.triggered.connect(functools.partial(self.tabs.setCurrentIndex, i))
            self.addAction(act)
        tb = QToolBar("Actions")
        tb.setObjectName("actions-toolbar")
        for key in ("import", "dataset", "compress", "evaluate", "optimize", "promote", "rollback", "export", "card"):
            tb.addAction(self.actions_by_key[key])
        self.addToolBar(tb)
        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        for key in ("open", "import", "dataset", "export", "card"):
            file_menu.addAction(self.actions_by_key[key])
        work = menu.addMenu("&Work")
        for key in ("compress", "evaluate", "optimize"):
            work.addAction(self.actions_by_key[key])
        release = menu.addMenu("&Release")
        for key in ("promote", "rollback", "policy", "verify"):
            release.addAction(self.actions_by_key[key])
        catalog_menu = menu.addMenu("&Catalog")
        for key in ("tags", "delete", "archive", "gc"):
            catalog_menu.addAction(self.actions_by_key[key])
        view = menu.addMenu("&View")
        for key in ("refresh", "theme", "find"):
            view.addAction(self.actions_by_key[key])

    def _apply_availability(self) -> None:
        for key, backend in ACTION_BACKENDS.items():
            act = self.actions_by_key[key]
            reason = self.reasons.get(backend, "")
            act.setEnabled(not reason)
            act.setToolTip(reason or act.text().rstrip("…"))
            act.setStatusTip(reason)
        self.board.apply_availability(self.reasons)
        if self._jobs is not None:
            self._jobs.apply_availability(self.reasons)

    def recheck_backends(self) -> dict[str, str]:
        """Look again for app-layer functions (e.g. after an upgrade); returns key → reason."""
        self.reasons = backends.status()
        self._apply_availability()
        return self.reasons

    # -- runner ---------------------------------------------------------------------------------
    def _start_runner(self, cpu_slots: int | None) -> None:
        Runner, reason = backends.lookup("runner")
        if Runner is None:
            self.runner_error = reason
            self.statusBar().showMessage(reason)
            return
        try:
            self.runner = Runner(self.catalog_path, cpu_slots)
        except RelmanError as e:
            self.runner_error = str(e)
            self.show_error(f"The job runner could not start: {e}")
            return
        self.runner_timer.start()

    def tick_runner(self) -> None:
        if self.runner is None:
            return
        try:
            report = self.runner.tick()
        except RelmanError as e:
            self.runner_timer.stop()
            self.show_error(f"The job runner stopped: {e}")
            return
        if not self.runner.has_lock:  # e.g. `relman jobs run` in a terminal drives this catalog
            holder = self.runner.lock.holder_pid()
            text = f"Jobs are run by another runner{f' (pid {holder})' if holder else ''}; this window only shows them"
            if self.statusBar().currentMessage() != text:
                self.statusBar().showMessage(text)
        if report and (report.get("started") or report.get("ended")):
            self.poll()

    # -- polling --------------------------------------------------------------------------------
    def poll(self) -> None:
        try:
            ctoken = catalog_token(self.catalog)
            jtoken = jobs_token(self.catalog)
        except Exception as e:  # a locked / vanished database must not crash the window
            self.statusBar().showMessage(f"catalog not readable right now: {e}")
            return
        if ctoken != self._catalog_token:
            self.refresh_catalog_views()
        if jtoken != self._jobs_token or (jtoken[8] or 0) > 0:  # running jobs: keep elapsed time moving
            self._jobs_token = jtoken
            if self._jobs is not None:
                self._jobs.refresh(self.catalog)
            self.jobs_changed.emit()

    def refresh(self, force: bool = False) -> None:
        if force:
            self._catalog_token = None
            self._jobs_token = None
        self.poll()

    def refresh_catalog_views(self) -> None:
        self.snapshot = load_snapshot(self.catalog)
        self._catalog_token = self.snapshot.token
        self._gate_cache.clear()
        self._set_versions(self.snapshot)
        self._fill_tree()
        self.disk_status.update_from(self.catalog)
        self.disk.stale = True
        # Views other than the one on screen are refreshed when they are next shown.
        self._dirty = {"board", "compare", "lineage", "audit"}
        self._refresh_view(TABS[self.tabs.currentIndex()])
        self.snapshot_changed.emit()

    def _refresh_view(self, name: str) -> None:
        if name not in self._dirty:
            return
        self._dirty.discard(name)
        model = self.current_model()
        if name == "board":
            self.board.set_snapshot(self.snapshot, self.snapshot.key_metrics(3), model)
            if self.selected_ids:
                self.board.select_version(self.selected_ids[0])
        elif name == "compare" and self._compare is not None:
            self._compare.set_snapshot(self.snapshot, model)
            self._compare.set_selection([i for i in self.selected_ids if i in self.snapshot.by_id()])
        elif name == "lineage":
            self.lineage.set_snapshot(self.snapshot, model)
        elif name == "audit":
            self.audit.refresh(self.catalog)

    def show_view(self, name: str) -> Any:
        """Bring a main view to the front (up to date) and return it."""
        self.tabs.setCurrentIndex(TABS.index(name))
        self._on_tab_changed(TABS.index(name))
        return {"versions": self.table, "board": self.board, "compare": self._compare, "lineage": self.lineage,
                "jobs": self._jobs, "audit": self.audit, "disk": self.disk}[name]

    def _set_versions(self, snap: Snapshot) -> None:
        keep = set(self.selected_ids)
        self.versions_model.set_snapshot(snap)  # a model reset: the proxy re-filters by itself
        widths = {"Model": 150, "Version": 80, "Phase": 110, "Format": 100, "Size": 90, "Params": 80, "Recipe": 160,
                  "Created": 140, "Tags": 100}
        header = self.table.horizontalHeader()
        for c, col in enumerate(self.versions_model.columns):
            header.resizeSection(c, widths.get(col[0], 120))
        if keep:
            self._select_rows(keep)
        self._update_count()

    def _update_count(self) -> None:
        self.count_label.setText(f"{self.versions_proxy.rowCount()} of {self.versions_model.total_rows} versions")
        error = getattr(self.versions_model, "filter_error", "")  # a half-typed query: words only, and why
        self.filter_edit.setToolTip(error or "Words, tag:/recipe:/phase:/model:/format:/task:, or accuracy>0.9")
        self.filter_edit.setStyleSheet("QLineEdit { color: #b07a1e; }" if error else "")

    def _fill_tree(self) -> None:
        self.tree.blockSignals(True)
        expanded = {self.tree.topLevelItem(i).text(0) for i in range(self.tree.topLevelItemCount())
                    if self.tree.topLevelItem(i).isExpanded()}
        self.tree.clear()
        groups: dict[str, list[VersionRow]] = {}
        for v in self.snapshot.versions:
            groups.setdefault(v.model, []).append(v)
        for model, rows in groups.items():
            top = QTreeWidgetItem([model, f"{len(rows)} versions"])
            top.setData(0, Qt.ItemDataRole.UserRole, ("model", model))
            # the newest 50 per model in the tree (navigation); the table has them all
            for v in rows[-50:]:
                child = QTreeWidgetItem([v.version, v.phase])
                child.setData(0, Qt.ItemDataRole.UserRole, ("version", v.id))
                child.setForeground(1, PHASE_BRUSHES.get(v.phase) or child.foreground(1))
                top.addChild(child)
            self.tree.addTopLevelItem(top)
            top.setExpanded(model in expanded or len(groups) <= 3)
        self.tree.resizeColumnToContents(0)
        self.tree.blockSignals(False)

    # -- selection ------------------------------------------------------------------------------
    def current_model(self) -> str | None:
        if self._focus_model and self._focus_model in self.snapshot.models():
            return self._focus_model
        if self.selected_ids:
            v = self.snapshot.by_id().get(self.selected_ids[0])
            if v is not None:
                return v.model
        models = self.snapshot.models()
        return models[0] if models else None

    def selected_versions(self) -> list[VersionRow]:
        by_id = self.snapshot.by_id()
        return [by_id[i] for i in self.selected_ids if i in by_id]

    def set_selection(self, ids: list[int]) -> None:
        ids = [int(i) for i in ids]
        if ids == self.selected_ids:
            return
        self.selected_ids = ids
        self._select_rows(set(ids))
        self.metric_history.follow()
        v = self.selected_versions()
        if v:
            self._follow_model(v[0].model, v[0].id)
        if self._compare is not None:
            self._compare.set_selection(ids)
            self.statusBar().showMessage(", ".join(x.ref for x in v))

    def _select_rows(self, ids: set[int]) -> None:
        sm = self.table.selectionModel()
        if not ids and not sm.hasSelection():
            return
        from PySide6.QtCore import QItemSelection, QItemSelectionModel

        sm.blockSignals(True)
        self.table.clearSelection()
        sel = QItemSelection()
        last = self.versions_model.columnCount() - 1
        for row, v in enumerate(self.versions_model.rows):  # Python list, not 10,000 Qt calls
            if v.id in ids:
                sel.select(self.versions_proxy.mapFromSource(self.versions_model.index(row, 0)),
                           self.versions_proxy.mapFromSource(self.versions_model.index(row, last)))
        sm.select(sel, QItemSelectionModel.SelectionFlag.Select)
        sm.blockSignals(False)
        self.table.viewport().update()

    def _on_table_selection(self) -> None:
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        ids = [self.versions_proxy.version_id(r) for r in rows]
        self.selected_ids = ids
        v = self.selected_versions()
        if v:
            self._follow_model(v[0].model, v[0].id)
        if self._compare is not None:
            self._compare.set_selection(ids)

    def _follow_model(self, model: str, version_id: int | None) -> None:
        """Point the model-scoped views at `model`: the one on screen now, the others when
        they are next shown (rebuilding hidden boards and graphs would stall the window)."""
        current = TABS[self.tabs.currentIndex()]
        self._focus_model = model
        for name, view in (("board", self.board), ("lineage", self.lineage), ("compare", self._compare)):
            if view is None:
                continue
            if name == current and name not in self._dirty:
                view.set_model(model)
                if name == "board" and version_id is not None:
                    self.board.select_version(version_id)
            else:
                self._dirty.add(name)

    def _on_tree_selection(self) -> None:
        items = self.tree.selectedItems()
        if not items:
            return
        kind, value = items[0].data(0, Qt.ItemDataRole.UserRole)
        if kind == "version":
            self.set_selection([value])
        else:
            self.versions_proxy.set_filter(model=value)
            self._follow_model(value, None)
            self._update_count()

    def show_all_models(self) -> None:
        self.versions_proxy.set_filter(model="")
        self._update_count()

    def _focus_filter(self) -> None:
        self.tabs.setCurrentIndex(0)
        self.filter_edit.setFocus()
        self.filter_edit.selectAll()

    # -- messages -------------------------------------------------------------------------------
    def show_error(self, text: str) -> None:
        self._show("error", text)

    def show_info(self, text: str) -> None:
        self._show("info", text)

    def _show(self, level: str, text: str) -> None:
        """A non-blocking message box (open(), not exec()), also recorded in `messages`."""
        self.messages.append((level, text))
        self.message_shown.emit(level, text)
        self.statusBar().showMessage(text, 10000)
        box = QMessageBox(QMessageBox.Icon.Warning if level == "error" else QMessageBox.Icon.Information,
                          "relman" if level == "info" else "relman: could not do that", text,
                          QMessageBox.StandardButton.Ok, self)
        box.setObjectName(f"message-{level}")
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.finished.connect(lambda _=0, b=box: self.open_boxes.remove(b) if b in self.open_boxes else None)
        self.open_boxes.append(box)
        box.open()

    def _run_action(self, key: str, slot: Callable[[], Any]) -> Any:
        """The action boundary: user errors become a message box; bugs too, with their type."""
        try:
            return slot()
        except RelmanError as e:
            self.show_error(str(e))
        except Exception as e:  # never crash the window on an action
            traceback.print_exc()
            self.show_error(f"{key} failed unexpectedly: {type(e).__name__}: {e}")
        return None

    def guarded(self, key: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return self._run_action(key, lambda: fn(*args, **kw))

    # -- child relman processes (imports, dataset registration) ----------------------------------
    def run_relman(self, label: str, args: list[str], on_done: Callable[[bool, str], None] | None = None) -> QProcess:
        """Run `relman --catalog <this> ARGS` as a child process without blocking; its one-line
        error (stderr) is shown when it fails."""
        from relman.jobs.launch import child_env, relman_argv

        argv = relman_argv("--catalog", str(self.catalog.root), *args)
        proc = QProcess(self)
        env = child_env()
        from PySide6.QtCore import QProcessEnvironment

        penv = QProcessEnvironment()
        for k, v in env.items():
            penv.insert(k, v)
        proc.setProcessEnvironment(penv)
        proc.setProgram(argv[0])
        proc.setArguments(argv[1:])
        self.processes.append(proc)
        self.statusBar().showMessage(f"{label}…")

        def finished(code: int, _status: Any) -> None:
            out = bytes(proc.readAllStandardOutput().data()).decode("utf-8", "replace")
            err = bytes(proc.readAllStandardError().data()).decode("utf-8", "replace").strip()
            if proc in self.processes:
                self.processes.remove(proc)
            ok = code == 0
            if ok:
                self.show_info(f"{label}: done")
            else:
                lines = [ln for ln in err.splitlines() if ln.strip()]
                msg = next((ln[len("error: "):] for ln in reversed(lines) if ln.startswith("error: ")),
                           lines[-1] if lines else f"exit code {code}")
                self.show_error(f"{label} failed: {msg}")
            self.refresh(force=True)
            if on_done:
                on_done(ok, out if ok else err)

        proc.finished.connect(finished)
        proc.start()
        return proc

    def busy(self) -> bool:
        return bool(self.processes)

    # -- actions ----------------------------------------------------------------------------------
    def _selected_or_error(self, what: str) -> list[VersionRow]:
        v = self.selected_versions()
        if not v:
            raise RelmanError(f"select a version first (in the table, the tree, the board or a plot) to {what}")
        return v

    def action_import(self) -> None:
        dlg = ImportDialog(self.snapshot.models(), self)  # proposes a new name from the folder
        if self.dialog_runner(dlg) == QDialog.DialogCode.Accepted and dlg.result_values:
            self.import_model(**dlg.result_values)

    def import_model(self, path: str, model: str, version: str | None = None,
                     new_architecture: bool = False) -> QProcess:
        backends.require("import_model")
        args = ["import", str(path), "--model", model]
        if version:
            args += ["--version", version]
        if new_architecture:
            args.append("--new-architecture")
        return self.run_relman(f"Import {Path(path).name} as {model}", args)

    def collect_garbage(self) -> QProcess:
        """`relman gc` in a child process; the disk view re-measures when it is done."""
        return self.run_relman("Collect garbage", ["gc"], on_done=lambda ok, _out: self.disk.refresh())

    def action_register_dataset(self) -> None:
        dlg = DatasetDialog(self)
        if self.dialog_runner(dlg) == QDialog.DialogCode.Accepted and dlg.result_values:
            self.register_dataset(**dlg.result_values)

    def register_dataset(self, path: str, name: str, format: str | None = None, text_col: str | None = "text",
                         label_col: str | None = "label", group_col: str | None = None, x_key: str | None = None,
                         y_key: str | None = None, val_fraction: float = 0.0, test_fraction: float = 0.0) -> QProcess:
        backends.require("register_dataset")
        args = ["dataset", "add", str(path), "--name", name]
        if format:
            args += ["--format", format]
        if text_col:
            args += ["--text-col", text_col]
        if label_col:
            args += ["--label-col", label_col]
        else:
            args += ["--no-labels"]
        for flag, value in (("--group-col", group_col), ("--x-key", x_key), ("--y-key", y_key)):
            if value:
                args += [flag, value]
        if val_fraction:
            args += ["--val-fraction", str(val_fraction)]
        if test_fraction:
            args += ["--test-fraction", str(test_fraction)]
        return self.run_relman(f"Register dataset {name}", args)

    def recipes_for(self, versions: list[VersionRow]) -> list[Any]:
        from relman.compress.registry import all_recipes

        return list(all_recipes())

    def action_compress(self) -> None:
        versions = self._selected_or_error("compress it")
        recipes = self.recipes_for(versions)
        if not recipes:
            raise RelmanError("no compression recipes are registered in this build")
        dlg = CompressDialog(recipes, [v.ref for v in versions], self, self.datasets())
        if self.dialog_runner(dlg) == QDialog.DialogCode.Accepted and dlg.result_values:
            self.queue_compression(**dlg.result_values)

    def queue_compression(self, recipe: str, params: dict[str, Any], parents: list[str], device: str = "auto",
                          dataset: str | None = None) -> Any:
        fn = backends.require("queue_compression")
        job = fn(self.catalog, parents if len(parents) > 1 else parents[0], recipe, params=params, device=device,
                 dataset=dataset)
        self.show_info(f"Queued {recipe} on {', '.join(parents)} (job {_job_id(job)})")
        self.refresh(force=True)
        return job

    def datasets(self) -> list[str]:
        return [r[0] for r in self.catalog.conn.execute("SELECT name FROM datasets ORDER BY name")]

    def suites(self) -> list[str]:
        try:
            from relman.evaluate import registry

            names = list(registry.all_suite_names()) or list(registry.ORDER)
        except Exception:  # evaluation not in this build: the dialog is disabled anyway
            names = []
        return names or ["size", "latency", "quality", "fidelity", "memory", "robustness", "fairness"]

    def action_evaluate(self) -> None:
        versions = self._selected_or_error("evaluate it")
        dlg = EvaluateDialog([v.ref for v in versions], self.datasets(), self.suites(), self)
        if self.dialog_runner(dlg) == QDialog.DialogCode.Accepted and dlg.result_values:
            self.queue_evaluation(**dlg.result_values)

    def queue_evaluation(self, refs: list[str], dataset: str | None, suites: list[str] | None,
                         device: str = "auto") -> Any:
        fn = backends.require("queue_evaluation")
        jobs = fn(self.catalog, refs, dataset=dataset, suites=suites, device=device)
        self.show_info(f"Queued evaluation of {', '.join(refs)}")
        self.refresh(force=True)
        return jobs

    def action_optimize(self) -> None:
        v = self._selected_or_error("optimize it")[0]
        backends.require("optimize")
        max_drop = QDoubleSpinBox()
        max_drop.setRange(0.0, 0.99)
        max_drop.setDecimals(3)
        max_drop.setSingleStep(0.005)
        max_drop.setValue(0.01)
        objective = QComboBox()
        objective.addItems(["latency", "size"])
        dataset = QComboBox()
        dataset.addItems(self.datasets())
        device = QComboBox()
        device.addItems(["auto", "cpu", "cuda:0"])
        dlg = SimpleFormDialog(f"Optimize {v.ref} (accuracy-aware search)",
                               [("Max accuracy drop", max_drop), ("Objective", objective), ("Dataset", dataset),
                                ("Device", device)], _needs("Dataset"), self)
        if self.dialog_runner(dlg) == QDialog.DialogCode.Accepted and dlg.result_values:
            vals = dlg.result_values
            self.queue_optimization(v.ref, max_drop=vals["Max accuracy drop"], objective=vals["Objective"],
                                    dataset=vals["Dataset"], device=vals["Device"])

    def queue_optimization(self, ref: str, *, max_drop: float, objective: str, dataset: str,
                           device: str = "auto") -> Any:
        fn = backends.require("optimize")
        job = fn(self.catalog, ref, max_drop=max_drop, objective=objective, dataset=dataset, device=device)
        self.show_info(f"Optimization of {ref} queued ({_job_id(job)})")
        self.refresh(force=True)
        return job

    def action_export(self) -> None:
        v = self._selected_or_error("export it")[0]
        backends.require("export_bundle")
        path, _ = QFileDialog.getSaveFileName(self, "Export release bundle", f"{v.model}-{v.version}.relman",
                                              "relman bundles (*.relman *.tar *.zip);;All files (*)")
        if path:
            self.export_bundle(v.ref, path)

    def export_bundle(self, ref: str, path: str) -> Any:
        fn = backends.require("export_bundle")
        out = fn(self.catalog, ref, Path(path))
        self.show_info(f"Exported {ref} to {out or path}")
        return out

    def action_model_card(self) -> None:
        v = self._selected_or_error("write its model card")[0]
        backends.require("write_model_card")
        path, _ = QFileDialog.getSaveFileName(self, "Write model card", f"{v.model}-{v.version}-README.md",
                                              "Markdown (*.md)")
        if path:
            self.write_model_card(v.ref, path)

    def write_model_card(self, ref: str, path: str) -> Any:
        fn = backends.require("write_model_card")
        out = fn(self.catalog, ref, Path(path))
        self.show_info(f"Model card for {ref} written to {out or path}")
        return out

    def action_verify(self) -> None:
        self.tabs.setCurrentIndex(TABS.index("audit"))
        ok, text = self.audit.verify()
        (self.show_info if ok else self.show_error)(text)

    def action_open_catalog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open catalog folder", str(self.catalog.root))
        if folder:
            self.open_catalog(folder)

    def open_catalog(self, folder: str | Path) -> None:
        new = open_catalog(Path(folder))
        if self.runner is not None:
            self.runner.close()
            self.runner = None
        self.catalog.close()
        self.catalog, self.catalog_path = new, Path(folder)
        self.audit.catalog = new
        self._dirty = {"board", "compare", "lineage", "audit"}
        self.settings.setValue("last_catalog", str(Path(folder).resolve()))
        self.setWindowTitle(f"relman — {self.catalog.root}")
        self.selected_ids = []
        if self.runner_timer.isActive() or self.runner_error == "":
            self.runner_timer.stop()
            self._start_runner(None)
        self.refresh(force=True)

    # -- release ------------------------------------------------------------------------------------
    def gate_status(self, v: VersionRow) -> tuple[str, str]:
        to = NEXT_PHASE.get(v.phase)
        if v.phase == "production":
            return "pass", f"in production{f' · {v.canary_share:g}%' if v.canary_share else ''}"
        if to is None:
            return "none", v.phase
        key = (self._catalog_token, v.id)
        if key in self._gate_cache:
            return self._gate_cache[key]
        fn, reason = backends.lookup("gates")
        if fn is None:
            status = ("unknown", f"gates → {to}: n/a")
        else:
            try:
                report = fn(self.catalog, v.ref, to)
                passed = report_passed(report)
                failing = len(getattr(report, "failing", []) or [])
                if not getattr(report, "allowed", True):
                    status = ("none", f"→ {to} not allowed by policy")
                elif passed:
                    status = ("pass", f"✓ gates pass → {to}")
                elif passed is False:
                    status = ("fail", f"✗ {failing} gate{'s' if failing != 1 else ''} FAIL → {to}")
                else:
                    status = ("unknown", f"no gates → {to}")
            except RelmanError as e:
                status = ("unknown", f"gates → {to}: {str(e)[:40]}")
        self._gate_cache[key] = status
        return status

    def action_promote(self) -> None:
        v = self._selected_or_error("promote it")[0]
        if v.phase not in NEXT_PHASE:
            raise RelmanError(f"{v.ref} is {v.phase}; only draft, candidate and staging versions can be promoted")
        self.request_transition(v.id, NEXT_PHASE[v.phase])

    def approvals_for(self, version_id: int, to_phase: str) -> list[dict[str, Any]]:
        fn, _ = backends.lookup("approvals")
        if fn is not None:
            try:
                return list(fn(self.catalog, version_id, to_phase))
            except RelmanError:
                pass
        return self.catalog.query("SELECT by, comment, at FROM approvals WHERE version_id = ? AND to_phase = ?",
                                  [version_id, to_phase])

    def request_transition(self, version_id: int, to_phase: str) -> None:
        self.guarded("promote", self._transition, version_id, to_phase)

    def _transition(self, version_id: int, to_phase: str) -> None:
        v = self.snapshot.by_id().get(version_id) or _row_from_catalog(self.catalog, version_id)
        if v.phase == to_phase:
            return
        if to_phase == "rejected":
            fn = backends.require("reject")
            why = QPlainTextEdit()
            dlg = SimpleFormDialog(f"Reject {v.ref}", [("Reason", why)], _needs("Reason"), self)
            if self.dialog_runner(dlg) == QDialog.DialogCode.Accepted and dlg.result_values:
                fn(self.catalog, v.ref, why=dlg.result_values["Reason"])
                self.show_info(f"{v.ref} rejected")
            self.refresh(force=True)
            return
        promote = backends.require("promote")
        report, gate_error = None, ""
        gates, _ = backends.lookup("gates")
        if gates is not None:
            try:
                report = gates(self.catalog, v.ref, to_phase)
            except RelmanError as e:
                gate_error = str(e)
        dlg = PromoteDialog(v.ref, v.phase, to_phase, report, self.approvals_for(v.id, to_phase), self, gate_error)
        if self.dialog_runner(dlg) == QDialog.DialogCode.Accepted and dlg.result_values:
            vals = dlg.result_values
            try:
                promote(self.catalog, v.ref, to_phase, why=vals["why"], override=vals["override"])
            finally:
                self.refresh(force=True)
            self.show_info(f"{v.ref} → {to_phase}" + (" (gates overridden)" if vals["override"] else ""))

    def request_rollback(self, model: str | None = None) -> None:
        self.guarded("rollback", self._rollback, model)

    def action_rollback(self) -> None:
        self._rollback(None)

    def _rollback(self, model: str | None) -> None:
        fn = backends.require("rollback")
        model = model or self.board.model_combo.currentText() or self.current_model()
        if not model:
            raise RelmanError("no model to roll back")
        why = QPlainTextEdit()
        dlg = SimpleFormDialog(f"Roll back {model}", [("Reason", why)], _needs("Reason"), self)
        if self.dialog_runner(dlg) == QDialog.DialogCode.Accepted and dlg.result_values:
            try:
                result = fn(self.catalog, model, why=dlg.result_values["Reason"])
            finally:
                self.refresh(force=True)
            self.show_info(f"{model}: production rolled back" + (f" to {_ref_of(result)}" if result else ""))

    def request_rollout(self, version_id: int) -> None:
        self.guarded("rollout", self._rollout, version_id)

    def _rollout(self, version_id: int) -> None:
        fn = backends.require("rollout")
        v = self.snapshot.by_id()[version_id]
        share = QDoubleSpinBox()
        share.setRange(0.0, 100.0)
        share.setValue(min(100.0, (v.canary_share or 0) * 2 or 5.0))
        share.setSuffix(" %")
        dlg = SimpleFormDialog(f"Canary share for {v.ref}", [("Share", share)], None, self)
        if self.dialog_runner(dlg) == QDialog.DialogCode.Accepted and dlg.result_values:
            try:
                fn(self.catalog, v.ref, dlg.result_values["Share"])
            finally:
                self.refresh(force=True)
            self.show_info(f"{v.ref}: canary share {dlg.result_values['Share']:g}%")

    def request_approve(self, version_id: int) -> None:
        self.guarded("approve", self._approve, version_id)

    def _approve(self, version_id: int) -> None:
        fn = backends.require("approve")
        from relman.catalog.catalog import current_user

        v = self.snapshot.by_id()[version_id]
        to = NEXT_PHASE.get(v.phase)
        if to is None:
            raise RelmanError(f"{v.ref} is {v.phase}; there is no next phase to approve")
        by = QLineEdit(current_user())
        comment = QLineEdit()
        dlg = SimpleFormDialog(f"Approve {v.ref} → {to}", [("By", by), ("Comment", comment)], _needs("By"), self)
        if self.dialog_runner(dlg) == QDialog.DialogCode.Accepted and dlg.result_values:
            try:
                fn(self.catalog, v.ref, to, by=dlg.result_values["By"], comment=dlg.result_values["Comment"])
            finally:
                self.refresh(force=True)
            self.show_info(f"{v.ref}: approved for {to} by {dlg.result_values['By']}")

    # -- jobs -----------------------------------------------------------------------------------------
    def cancel_job(self, job_id: int) -> None:
        def do() -> None:
            fn = backends.require("cancel_job")
            fn(self.catalog, job_id)
            self.refresh(force=True)
        self.guarded("cancel", do)

    def retry_job(self, job_id: int) -> None:
        def do() -> None:
            fn = backends.require("retry_job")
            fn(self.catalog, job_id)
            self.refresh(force=True)
        self.guarded("retry", do)

    # -- theme & settings ---------------------------------------------------------------------------
    def set_theme(self, dark: bool) -> None:
        from PySide6.QtWidgets import QApplication

        self.dark = dark
        app = QApplication.instance()
        try:
            sheet = read_text("themes", "dark.qss" if dark else "light.qss")
        except RelmanError as e:
            sheet = ""
            self.statusBar().showMessage(str(e))
        if app is not None:
            app.setStyleSheet(sheet)  # type: ignore[attr-defined]
        for view in (self._compare, self.lineage, self._jobs):
            if view is not None:
                view.set_theme(dark)
        self.settings.setValue("theme", "dark" if dark else "light")

    def _restore_settings(self) -> None:
        geom = self.settings.value("geometry")
        self.restored_layout = False
        if isinstance(geom, QByteArray) and not geom.isEmpty() and self.restoreGeometry(geom):
            self.restored_layout = True
        else:
            self.resize(1400, 880)
        state = self.settings.value("window_state")
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.restored_layout = self.restoreState(state) and self.restored_layout
        tab = self.settings.value("tab", 0)
        try:
            self.tabs.setCurrentIndex(int(tab))
        except (TypeError, ValueError):
            pass
        self.set_theme(self.settings.value("theme", "light") == "dark")
        self.settings.setValue("last_catalog", str(self.catalog.root.resolve()))

    def save_settings(self) -> None:
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("window_state", self.saveState())
        self.settings.setValue("tab", self.tabs.currentIndex())
        self.settings.setValue("last_catalog", str(self.catalog.root.resolve()))
        self.settings.sync()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.save_settings()
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop timers and let go of the runner (running workers keep running; the next
        runner adopts them) and the catalog."""
        self.poll_timer.stop()
        self.runner_timer.stop()
        if self.disk_status.timer is not None:
            self.disk_status.timer.stop()
        if self.disk.proc is not None:
            self.disk.proc.waitForFinished(30000)
        for proc in list(self.processes):
            proc.waitForFinished(30000)
        if self.runner is not None:
            self.runner.close()
            self.runner = None

    def grab_tab(self, name: str, path: Path) -> Path:
        """Show tab `name` and save a PNG of the whole window (used by the demo's screenshots)."""
        from PySide6.QtWidgets import QApplication

        self.tabs.setCurrentIndex(TABS.index(name))
        for _ in range(3):
            QApplication.processEvents()
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.grab().save(str(path)):
            raise RelmanError(f"could not write the screenshot {path}")
        return path


def _open_policy_editor(window: "MainWindow") -> Any:
    from relman.ui.qt_policy import open_policy_editor

    return open_policy_editor(window)


def app_icon() -> QIcon:
    """The window icon from the PNG sizes (no SVG plugin needed in a slimmed frozen build),
    else the SVG; an empty icon if neither is there."""
    icon = QIcon()
    for size in (16, 24, 32, 48, 64, 128, 256):
        try:
            icon.addFile(str(resource_path("icons", f"relman-{size}.png")))
        except RelmanError:
            continue
    if icon.isNull():
        try:
            icon = QIcon(str(resource_path("icons", "relman.svg")))
        except RelmanError:
            pass
    return icon


def _needs(field: str) -> Callable[[dict[str, Any]], None]:
    def check(values: dict[str, Any]) -> None:
        if not str(values.get(field, "")).strip():
            raise RelmanError(f"'{field}' is required")
    return check


def _job_id(job: Any) -> str:
    if isinstance(job, int):
        return f"job {job}"
    if isinstance(job, dict) and "id" in job:
        return f"job {job['id']}"
    if isinstance(job, (list, tuple)):
        return ", ".join(_job_id(j) for j in job)
    return str(job)


def _ref_of(result: Any) -> str:
    return getattr(result, "ref", None) or (result.get("ref") if isinstance(result, dict) else str(result))


def _row_from_catalog(catalog: Catalog, version_id: int) -> VersionRow:
    v = catalog.get_version(version_id)
    return VersionRow(id=v.id, model=v.model, version=v.version, phase=v.phase, format=v.format, task=v.task,
                      size_bytes=v.size_bytes, params=v.params, recipe=v.recipe, created_at=v.created_at,
                      canary_share=v.canary_share)


def _phase_brushes() -> dict[str, Any]:
    from PySide6.QtGui import QBrush, QColor

    return {p: QBrush(QColor(c)) for p, c in PHASE_COLORS.items()}


class _LazyBrushes(dict):
    def get(self, key: Any, default: Any = None) -> Any:  # type: ignore[override]
        if not self:
            self.update(_phase_brushes())
        return super().get(key, default)


PHASE_BRUSHES = _LazyBrushes()
