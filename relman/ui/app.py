"""Start-up of the desktop application: `relman gui` and `relman demo` call these.

Kept small on purpose: it creates the QApplication, picks the catalog (explicit, else the
last one used, else the default) and shows the main window. Nothing on this path imports
torch; a test checks `sys.modules` after the window is up.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from relman.errors import RelmanError
from relman.ui.views import view_names

MAIN_VIEWS = view_names()  # every registered view (relman/ui/views.py), in tab order


def has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def ensure_app(headless: bool = False) -> Any:
    """The QApplication (created once); offscreen when asked to or when there is no display."""
    if headless or not has_display():
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
        app.setApplicationName("relman")
        app.setOrganizationName("relman")
    return app


def choose_catalog(explicit: str | os.PathLike[str] | None, settings: Any) -> Path:
    """--catalog / RELMAN_CATALOG, else the catalog used last time (if it still exists), else
    the per-user default."""
    from relman.catalog.location import resolve_catalog_path

    if explicit or os.environ.get("RELMAN_CATALOG"):
        return resolve_catalog_path(explicit)
    last = settings.value("last_catalog")
    if last and (Path(str(last)) / "catalog.db").exists():
        return Path(str(last))
    return resolve_catalog_path(None)


def open_window(catalog_path: str | os.PathLike[str] | None, *, headless: bool = False, run_jobs: bool = True) -> Any:
    t0 = time.perf_counter()
    app = ensure_app(headless)
    from relman.ui.qt_main import MainWindow, default_settings

    settings = default_settings()
    path = choose_catalog(catalog_path, settings)
    window = MainWindow(path, settings=settings, run_jobs=run_jobs)
    window.show()
    app.processEvents()
    window.startup_s = time.perf_counter() - t0
    import gc

    # Start-up objects (modules, Qt wrappers) live as long as the window: take them out of
    # the cyclic collector's scans so its occasional full passes stay short while jobs run.
    gc.collect()
    gc.freeze()
    return app, window


def run_gui(catalog_path: str | os.PathLike[str] | None = None) -> int:
    app = ensure_app()
    try:
        app, window = open_window(catalog_path)
    except RelmanError as e:
        from PySide6.QtWidgets import QMessageBox

        QMessageBox.critical(None, "relman", f"Cannot open the catalog: {e}")
        return 1
    window.statusBar().showMessage(f"Ready ({window.startup_s:.2f} s to open)", 10000)
    code = int(app.exec())
    close_window(app, window)
    return code


def close_window(app: Any, window: Any) -> None:
    """Shut the window down completely while Qt is still alive.

    Why: with pyqtgraph plots in several views, leaving the window for interpreter shutdown
    to collect crashes CPython's finaliser (a refcount bug below us: "bool_dealloc"), so a
    headless run would exit with SIGABRT. Stopping timers, deleting the window through Qt and
    collecting garbage before exit avoids it."""
    import gc

    window.shutdown()
    window.close()
    window.deleteLater()
    app.processEvents()
    gc.collect()


def screenshots(window: Any, folder: Path, views: tuple[str, ...] = MAIN_VIEWS, prefix: str = "",
                dark_views: tuple[str, ...] = ()) -> list[Path]:
    """One PNG of the window per main view (light theme), plus `dark_views` in the dark theme.
    The jobs view shows the job with the longest live curve; the audit view its verification."""
    out = []
    was_dark = window.dark
    window.set_theme(False)
    for name in views:
        if name == "jobs":
            row = window.catalog.conn.execute(
                "SELECT job_id FROM job_points GROUP BY job_id ORDER BY COUNT(*) DESC LIMIT 1").fetchone()
            if row:
                window.show_view("jobs").select_job(row[0])
        if name == "audit":
            window.show_view("audit").verify()
        out.append(window.grab_tab(name, Path(folder) / f"{prefix}{name}.png"))
    if dark_views:
        window.set_theme(True)
        for name in dark_views:
            out.append(window.grab_tab(name, Path(folder) / f"{prefix}dark-{name}.png"))
    window.set_theme(was_dark)
    return out
