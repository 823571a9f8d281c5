"""The main window: a thin shell around the views and the controllers.

It owns the tabs (one per registered view, `relman.ui.views.VIEWS`), the Models dock, the
menus and toolbar (laid out from the controllers' actions), the timers, the settings and
the one shared selection. What the actions do lives in `relman.ui.controllers`; what each
tab shows lives in its view module.

How it stays responsive: the window reads the catalog (its only channel to workers) on a
QTimer with two one-row aggregate queries (`catalog_token`, `jobs_token`) and rebuilds
views only when those change, and only the one on screen (others when next shown); the job
runner is driven by `Runner.tick()` on another QTimer; anything that reads large files runs
in a worker process as a job (imports, datasets, bundles, promotions that re-hash
artifacts), never in this process. Errors that users cause (`RelmanError`) are shown at the
action boundary (`guarded`), never raised into Qt.
"""

from __future__ import annotations

import functools
import os
import traceback
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import QDockWidget, QMainWindow, QTabWidget, QToolBar, QVBoxLayout, QWidget

from relman.catalog import Catalog, open_catalog
from relman.errors import RelmanError
from relman.ui import views as view_registry
from relman.ui.controllers import ActionSpec
from relman.ui.controllers.catalog_actions import CatalogActions
from relman.ui.controllers.job_actions import JobActions
from relman.ui.controllers.release_actions import ReleaseActions
from relman.ui.controllers.side_by_side import SideBySideActions
from relman.ui.controllers.work_actions import WorkActions
from relman.ui.qt_help import ACTION_TIPS
from relman.ui.qt_messages import MessageLog
from relman.ui.qt_page import app_icon, page as _page
from relman.ui.qt_tree import ModelTree
from relman.ui.resources import read_text
from relman.ui.selection import Selection
from relman.ui.snapshot import Snapshot, VersionRow, catalog_token, jobs_token, load_snapshot
from relman.ui.views import ViewState

# Where each action appears (the controllers define what they do).
MENUS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("&File", ("new-catalog", "open", "import", "dataset", "export", "import-bundle", "card", "card-view",
               "quit")),
    ("&Work", ("compress", "evaluate", "optimize", "optimize-results")),
    ("&Release", ("promote", "rollback", "policy", "verify")),
    ("&Catalog", ("tags", "delete", "archive", "gc")),
    ("&View", ("refresh", "theme", "find", "compare-selected", "generate-selected")),
    ("&Jobs", ("executor",)),
    ("&Help", ("shortcuts", "about")),
)
TOOLBAR = ("import", "dataset", "compress", "evaluate", "optimize", "promote", "rollback", "export", "card",
           "compare-selected")


def default_settings() -> QSettings:
    path = os.environ.get("RELMAN_GUI_SETTINGS")
    if path:
        return QSettings(path, QSettings.Format.IniFormat)
    return QSettings("relman", "relman")


class MainWindow(QMainWindow):
    snapshot_changed = Signal()
    jobs_changed = Signal()

    def __init__(self, catalog_path: Path | str, *, settings: QSettings | None = None, run_jobs: bool = True,
                 poll_ms: int = 400, runner_ms: int = 300, cpu_slots: int | None = None) -> None:
        super().__init__()
        from relman.ui.refcount_guard import install as guard_singletons

        self.refcount_guard = guard_singletons()  # the binding's none_dealloc bug (see the module)
        self.settings = settings or default_settings()
        self.catalog_path = Path(catalog_path)
        self.catalog: Catalog = open_catalog(self.catalog_path)
        self.snapshot: Snapshot = Snapshot([], [], [])
        self.selection = Selection(self)
        self.messages_log = MessageLog(self)
        self.messages = self.messages_log.messages
        self.open_boxes = self.messages_log.open_boxes
        self.dialog_runner: Callable[[Any], int] = lambda d: d.exec()
        self.dark = False
        self._catalog_token: tuple[Any, ...] | None = None
        self._jobs_token: tuple[Any, ...] | None = None
        self._views: dict[str, Any] = {}
        self._dirty: set[str] = set()
        self.job_actions = JobActions(self)
        self.work = WorkActions(self)
        self.release = ReleaseActions(self)
        self.catalog_actions = CatalogActions(self)
        self.side_by_side = SideBySideActions(self)  # "Compare selected" from any view

        self.setWindowTitle(f"relman — {self.catalog.root}")
        self.setWindowIcon(app_icon())
        self._build_tabs()
        self._build_models_dock()
        from relman.ui.qt_metric_history import install_metric_history

        self.metric_history = install_metric_history(self)  # a dock that follows the selection
        history_dock = self.findChild(QDockWidget, "metric-history-dock")
        if history_dock is not None:  # a laptop screen keeps most of its height for the views
            self.resizeDocks([history_dock], [150], Qt.Orientation.Vertical)
        self._build_status_bar()
        self._build_actions()
        self.side_by_side.attach_all()  # right-click menus of the version lists
        self.selection.changed.connect(lambda _ids: self._sync_views())
        self.selection.model_changed.connect(lambda _m: self._sync_views())
        self._restore_settings()
        from relman.ui.catalog_chooser import install_recent_menu
        from relman.ui.empty_state import install_empty_hint

        self.recent_menu = install_recent_menu(self)  # File → Recent catalogs
        self.empty_hint = install_empty_hint(self)  # "No models yet": import, or the demo
        self.refresh(force=True)
        self._open_on_overview()

        self.poll_timer = QTimer(self)
        self.poll_timer.setInterval(poll_ms)
        self.poll_timer.timeout.connect(self.poll)
        self.poll_timer.start()
        self.runner_timer = QTimer(self)
        self.runner_timer.setInterval(runner_ms)
        self.runner_timer.timeout.connect(self.tick_runner)
        if run_jobs:
            self._start_runner(cpu_slots)

    # -- views --------------------------------------------------------------------------------
    def _build_tabs(self) -> None:
        self.tabs = QTabWidget()
        self.tabs.setObjectName("tabs")
        from relman.ui.qt_integrity_banner import IntegrityBanner, IntegrityWatch

        self.integrity_banner = IntegrityBanner()  # red while the catalog fails verification
        self.integrity_banner.review_requested.connect(lambda: self.release.action_accept_integrity())
        self.integrity = IntegrityWatch(lambda: self.catalog, self._show_integrity)
        central = QWidget()
        column = QVBoxLayout(central)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(2)
        column.addWidget(self.integrity_banner)
        column.addWidget(self.tabs, 1)
        self.setCentralWidget(central)
        for spec in view_registry.VIEWS:
            self._views[spec.name] = None
            self.tabs.addTab(_page(QWidget() if spec.lazy else self._make_view(spec)), spec.title)
        self.tabs.currentChanged.connect(self._on_tab_changed)
        self.statusBar().showMessage("Ready")

    def _make_view(self, spec: view_registry.ViewSpec) -> Any:
        view = spec.load()(self)
        view.apply_theme(self.dark)
        self._views[spec.name] = view
        self._dirty.add(spec.name)
        if hasattr(self, "actions_by_key"):  # a view built later gets the right-click actions too
            self.side_by_side.attach(spec.name, view)
        return view

    def view(self, name: str) -> Any:
        """The registered view `name`, built now if it is lazy and was not shown yet."""
        if name not in self._views:
            view_registry.spec(name)  # raises, naming the registered views
        view = self._views[name]
        if view is None:
            view = self._make_view(view_registry.spec(name))
            self._replace_tab(name, view)
            self._refresh_view(name)
        return view

    def __getattr__(self, name: str) -> Any:
        # window.board, window.jobs, …: the registered views (see relman.ui.views)
        if name in view_registry.view_names():
            return self.view(name)
        raise AttributeError(f"'MainWindow' object has no attribute '{name}'")

    def _replace_tab(self, name: str, widget: QWidget) -> None:
        i = view_registry.view_names().index(name)
        current = self.tabs.currentIndex()
        self.tabs.blockSignals(True)
        old = self.tabs.widget(i)
        self.tabs.removeTab(i)
        self.tabs.insertTab(i, _page(widget), view_registry.spec(name).title)
        self.tabs.setCurrentIndex(current)
        self.tabs.blockSignals(False)
        old.deleteLater()

    def built_views(self) -> dict[str, Any]:
        return {n: v for n, v in self._views.items() if v is not None}

    def current_view_name(self) -> str:
        return view_registry.view_names()[max(0, self.tabs.currentIndex())]

    def _on_tab_changed(self, index: int) -> None:
        name = view_registry.view_names()[index]
        self.view(name)
        self._refresh_view(name)

    def _open_on_overview(self) -> None:
        """A catalog with several models opens on the Overview (what is released where)."""
        if len(self.snapshot.models()) > 1 and "overview" in view_registry.view_names():
            self.show_view("overview")

    def show_view(self, name: str) -> Any:
        """Bring a view to the front (up to date) and return it."""
        self.tabs.setCurrentIndex(view_registry.view_names().index(name))
        self._on_tab_changed(view_registry.view_names().index(name))
        return self.view(name)

    def state(self) -> ViewState:
        ids = [i for i in self.selection.ids if i in self.snapshot.by_id()]
        return ViewState(snapshot=self.snapshot, catalog=self.catalog, model=self.current_model(), selected=ids)

    def _refresh_view(self, name: str) -> None:
        view = self._views.get(name)
        if view is None or name not in self._dirty:
            return
        self._dirty.discard(name)
        view.refresh(self.state())

    def _sync_views(self) -> None:
        """After a selection or focus change: views that follow it cheaply (and the one on
        screen) update now; the others are refreshed when next shown."""
        state = self.state()
        current = self.current_view_name()
        for name, view in self.built_views().items():
            hook = getattr(view, "on_selection", None)
            if hook is not None and name not in self._dirty and (
                    name == current or getattr(view, "follows_selection_hidden", False)):
                hook(state)
            elif name != current:
                self._dirty.add(name)
        if self.selected_versions():
            self.statusBar().showMessage(", ".join(v.ref for v in self.selected_versions()))

    # -- models dock ----------------------------------------------------------------------------
    def _build_models_dock(self) -> None:
        self.tree = ModelTree(self)
        dock = QDockWidget("Models", self)
        dock.setObjectName("models-dock")
        dock.setWidget(self.tree)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)
        self.resizeDocks([dock], [210], Qt.Orientation.Horizontal)  # the views get the room
        self.models_dock = dock

    def _build_status_bar(self) -> None:
        from relman.ui.qt_disk import DiskStatusLabel

        self.disk_status = DiskStatusLabel()  # catalog size and free space; warns when low
        self.statusBar().addPermanentWidget(self.disk_status)
        self.statusBar().addPermanentWidget(self.messages_log.button)  # the message log
        self.disk_status.follow(lambda: self.catalog)

    # -- actions ----------------------------------------------------------------------------------
    def _build_actions(self) -> None:
        specs = [
            ActionSpec("new-catalog", "New catalog…", "Ctrl+Shift+N", self.action_new_catalog,
                       "Make a new catalog in an empty or new folder and switch to it"),
            ActionSpec("open", "Open catalog…", "Ctrl+O", self.action_open_catalog),
            ActionSpec("refresh", "Refresh", "F5", lambda: self.refresh(force=True)),
            ActionSpec("theme", "Toggle dark theme", "Ctrl+T", lambda: self.set_theme(not self.dark)),
            ActionSpec("find", "Find versions", "Ctrl+F", self._focus_filter),
            ActionSpec("quit", "Quit", "Ctrl+Q", self.quit_asking,
                       "Close the window (asks what to do with unfinished jobs)"),
            ActionSpec("shortcuts", "Keyboard shortcuts", "F1", self.show_shortcuts),
            ActionSpec("about", "About relman", "", self.show_about),
        ]
        for controller in (self.work, self.release, self.catalog_actions, self.job_actions, self.side_by_side):
            specs += controller.actions()
        self.actions_by_key: dict[str, QAction] = {}
        for s in specs:
            act = QAction(s.text, self)
            act.setObjectName(f"action-{s.key}")
            act.setShortcut(QKeySequence(s.shortcut))
            act.setToolTip(s.tip or ACTION_TIPS.get(s.key) or s.text.rstrip("…"))
            act.triggered.connect(functools.partial(self._run_action, s.key, s.slot))
            self.actions_by_key[s.key] = act
            self.addAction(act)
        for i, spec in enumerate(view_registry.VIEWS[:9]):
            act = QAction(f"Show {spec.name}", self)
            act.setShortcut(QKeySequence(f"Ctrl+{i + 1}"))
            act.triggered.connect(functools.partial(self.tabs.setCurrentIndex, i))
            self.addAction(act)
        tb = QToolBar("Actions")
        tb.setObjectName("actions-toolbar")
        for key in TOOLBAR:
            tb.addAction(self.actions_by_key[key])
        self.addToolBar(tb)
        for title, keys in MENUS:
            menu = self.menuBar().addMenu(title)
            for key in keys:
                menu.addAction(self.actions_by_key[key])

    def show_shortcuts(self) -> Any:
        from relman.ui.qt_help import ShortcutsDialog

        dialog = ShortcutsDialog(self)
        dialog.open()  # not modal: the sheet can stay open beside the window
        return dialog

    def show_about(self) -> None:
        from PySide6.QtWidgets import QMessageBox

        from relman.ui.qt_help import about_text

        box = QMessageBox(QMessageBox.Icon.Information, "About relman", about_text(self),
                          QMessageBox.StandardButton.Ok, self)
        box.setObjectName("about")
        box.open()

    def _focus_filter(self) -> None:
        self.show_view("versions").focus_filter()

    def _run_action(self, key: str, slot: Callable[[], Any]) -> Any:
        """The action boundary: user errors become a message; bugs too, with their type."""
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

    def show_error(self, text: str) -> None:
        from relman.ui.gui_terms import in_gui_terms

        self.messages_log.error(in_gui_terms(text))  # a CLI flag becomes the field that sets it

    def show_info(self, text: str) -> None:
        self.messages_log.info(text)

    # -- jobs ----------------------------------------------------------------------------------------
    @property
    def runner(self) -> Any:
        return self.job_actions.runner

    def _start_runner(self, cpu_slots: int | None) -> None:
        if self.job_actions.start_runner(cpu_slots):
            self.runner_timer.start()

    def tick_runner(self) -> None:
        if not self.job_actions.tick():
            self.runner_timer.stop()

    def busy(self) -> bool:
        """Whether a job this window queued (an import, an export…) is still running."""
        return self.job_actions.busy()

    # -- polling ----------------------------------------------------------------------------------
    def poll(self) -> None:
        try:
            ctoken = catalog_token(self.catalog)
            jtoken = jobs_token(self.catalog)
        except Exception as e:  # a locked / vanished database must not crash the window
            self.statusBar().showMessage(f"catalog not readable right now: {e}")
            return
        catalog_changed, jobs_changed = ctoken != self._catalog_token, jtoken != self._jobs_token
        if catalog_changed:
            self.refresh_catalog_views()
        self.integrity.tick(catalog_changed, jobs_changed)  # cached; re-run only when the database changed
        if jtoken != self._jobs_token or (jtoken[8] or 0) > 0:  # running jobs: keep elapsed time moving
            self._jobs_token = jtoken
            for view in self.built_views().values():
                if hasattr(view, "on_jobs"):
                    view.on_jobs(self.catalog)
            self.job_actions.check_tracked()
            self.jobs_changed.emit()

    def refresh(self, force: bool = False) -> None:
        if force:
            self._catalog_token = None
            self._jobs_token = None
        self.poll()

    def refresh_catalog_views(self) -> None:
        self.snapshot = load_snapshot(self.catalog)
        self._catalog_token = self.snapshot.token
        self.release.forget()
        self.tree.fill(self.snapshot)
        self.disk_status.update_from(self.catalog)
        built = self.built_views()
        self._dirty = set(built)
        for name, view in built.items():
            if getattr(view, "eager", False):
                self._refresh_view(name)
        self._refresh_view(self.current_view_name())
        self.snapshot_changed.emit()

    def _show_integrity(self, problems: list[str]) -> None:
        """The integrity check's result: the banner, and the Audit view if it is built."""
        self.integrity_banner.show_problems(problems)
        audit = self.built_views().get("audit")
        if audit is not None and hasattr(audit, "show_check"):
            audit.show_check(problems)

    # -- selection ------------------------------------------------------------------------------------
    def current_model(self) -> str | None:
        models = self.snapshot.models()
        if self.selection.model and self.selection.model in models:
            return self.selection.model
        by_id = self.snapshot.by_id()
        for i in self.selection.ids:
            if i in by_id:
                return by_id[i].model
        return models[0] if models else None

    @property
    def selected_ids(self) -> list[int]:
        return list(self.selection.ids)

    def selected_versions(self) -> list[VersionRow]:
        by_id = self.snapshot.by_id()
        return [by_id[i] for i in self.selection.ids if i in by_id]

    def set_selection(self, ids: list[int], source: str | None = None) -> None:
        """Select versions everywhere (the tree, the table, the board and the plots follow)."""
        ids = [int(i) for i in ids]
        v = self.snapshot.by_id().get(ids[0]) if ids else None
        self.selection.set(ids, v.model if v is not None else None)

    def focus_model(self, model: str, filter_table: bool = False) -> None:
        """Point the model-scoped views (board, lineage, compare) at `model`."""
        if filter_table:
            self.view("versions").filter_model(model)
        self.selection.focus_model(model)

    # -- catalog --------------------------------------------------------------------------------------
    def action_new_catalog(self) -> bool:
        from relman.ui.catalog_chooser import new_catalog

        return new_catalog(self)  # only a new or empty folder (relman.ui.catalog_chooser)

    def action_open_catalog(self) -> bool:
        from relman.ui.catalog_chooser import open_catalog_checked

        return open_catalog_checked(self)  # a folder that is not a catalog is refused or confirmed

    def open_catalog(self, folder: str | Path) -> None:
        """Switch to another catalog: the runner, the tracked jobs, the selection and every
        view start afresh (no view keeps rows, jobs or a selection of the old catalog)."""
        new = open_catalog(Path(folder))
        restart = self.runner is not None or self.runner_timer.isActive()
        self.runner_timer.stop()
        self.job_actions.close_runner()
        self.job_actions.forget_tracked()
        self.catalog.close()
        self.catalog, self.catalog_path = new, Path(folder)
        self.settings.setValue("last_catalog", str(Path(folder).resolve()))
        self._remember_catalog()
        self.setWindowTitle(f"relman — {self.catalog.root}")
        self.selection.clear()
        self.snapshot = Snapshot([], [], [])
        for spec in view_registry.VIEWS:  # fresh views: nothing of the old catalog survives
            if self._views.get(spec.name) is not None:
                self._views[spec.name] = None
                self._replace_tab(spec.name, QWidget() if spec.lazy else self._make_view(spec))
        self._on_tab_changed(self.tabs.currentIndex())
        if restart:
            self._start_runner(None)
        self.refresh(force=True)
        self._open_on_overview()

    # -- theme & settings -------------------------------------------------------------------------------
    def set_theme(self, dark: bool) -> None:
        from PySide6.QtWidgets import QApplication

        self.dark = dark
        app = QApplication.instance()
        try:
            sheet = read_text("themes", "dark.qss" if dark else "light.qss")
        except RelmanError as e:
            sheet = ""
            self.statusBar().showMessage(str(e))
        if app is not None and app.styleSheet() != sheet:  # type: ignore[attr-defined]
            app.setStyleSheet(sheet)  # type: ignore[attr-defined]  (re-polishes every widget)
        for view in self.built_views().values():
            view.apply_theme(dark)
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
        self._remember_catalog()

    def _remember_catalog(self) -> None:
        from relman.ui.catalog_chooser import remember_catalog

        remember_catalog(self.settings, self.catalog.root)  # File → Recent catalogs, newest first
        menu = getattr(self, "recent_menu", None)
        if menu is not None:
            from relman.ui.catalog_chooser import fill_recent_menu

            fill_recent_menu(self, menu)

    def save_settings(self) -> None:
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("window_state", self.saveState())
        self.settings.setValue("tab", self.tabs.currentIndex())
        self.settings.setValue("last_catalog", str(self.catalog.root.resolve()))
        self.settings.sync()

    def quit_asking(self) -> None:
        """Ctrl+Q: close as the user does, asking first about unfinished jobs (relman.ui.qt_quit)."""
        self._user_quit = True
        try:
            self.close()
        finally:
            self._user_quit = False

    def closeEvent(self, event: QCloseEvent) -> None:
        from relman.ui.qt_quit import confirm_quit

        # the user closes (Ctrl+Q, the title bar's button): unfinished jobs? ask (a programmatic close does not)
        if (event.spontaneous() or getattr(self, "_user_quit", False)) and not confirm_quit(self):
            event.ignore()
            return
        note = self.job_actions.closing_note()
        if note:  # not a question: the jobs are safe either way; say so (log + desktop note)
            self.messages_log.info(note)
            self.messages_log.notify("relman: jobs keep running", note)
        self.save_settings()
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop timers and let go of the runner (running workers keep running; the next
        runner adopts them)."""
        self.poll_timer.stop()
        self.runner_timer.stop()
        self.job_actions.close_runner()
        if self.disk_status.timer is not None:
            self.disk_status.timer.stop()
        disk = self._views.get("disk")
        if disk is not None and disk.proc is not None:  # a `relman du` measuring: let it finish
            disk.proc.waitForFinished(30000)

    def grab_tab(self, name: str, path: Path) -> Path:
        """Show view `name` and save a PNG of the whole window (the demo's screenshots)."""
        from PySide6.QtWidgets import QApplication

        self.show_view(name)
        for _ in range(3):
            QApplication.processEvents()
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.grab().save(str(path), "PNG", 0):  # 0: the strongest PNG compression
            raise RelmanError(f"could not write the screenshot {path}")
        return path
