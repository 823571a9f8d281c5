"""The empty-catalog hint: what a new catalog shows instead of empty tables.

A new user who makes a catalog sees a window of empty views and no next step. While the
catalog holds no model, a panel above the views says so and offers the two ways in:
"Import a model…" (the File menu's action) and "Load the demo catalog", which builds the demo
(`relman demo --build-only`, in a child process: it trains a small model and runs jobs, so never
in this one) in its own folder beside the default catalog and switches the window to it when
it is ready. A demo folder that already holds the demo is opened at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QProcess, QProcessEnvironment
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from relman.errors import RelmanError

DEMO_ARGS: tuple[str, ...] = ("demo", "--build-only")


def demo_catalog_path() -> Path:
    """Beside the per-user default catalog: ~/.local/share/relman/demo-catalog on Linux."""
    from relman.catalog.location import default_catalog_path

    return default_catalog_path().parent / "demo-catalog"


class EmptyCatalogHint(QFrame):
    """Shown while the open catalog has no model; hidden as soon as one is imported."""

    def __init__(self, window: Any) -> None:
        super().__init__()
        self.main = window
        self.setObjectName("empty-catalog-hint")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.title = QLabel("<b>No models yet.</b> Import a model (a Hugging Face folder, ONNX, GGUF…) "
                            "or load the demo catalog to look around.")
        self.title.setWordWrap(True)
        self.status = QLabel("")
        self.status.setObjectName("empty-catalog-status")
        self.status.setWordWrap(True)
        self.import_btn = QPushButton("Import a model…")
        self.import_btn.setObjectName("empty-import")
        self.demo_btn = QPushButton("Load the demo catalog")
        self.demo_btn.setObjectName("empty-demo")
        self.demo_btn.setToolTip(f"Build the demo (a small ViT trained here, its compressions and releases) "
                                 f"in {demo_catalog_path()} and open it — about a minute, in a child process")
        self.demo_folder: Path = demo_catalog_path()
        self.demo_extra_args: tuple[str, ...] = ()  # e.g. ("--no-lm",): passed to `relman demo`
        self.proc: QProcess | None = None
        self._last_line = ""
        buttons = QHBoxLayout()
        buttons.addWidget(self.import_btn)
        buttons.addWidget(self.demo_btn)
        buttons.addStretch(1)
        lay = QVBoxLayout(self)
        lay.addWidget(self.title)
        lay.addLayout(buttons)
        lay.addWidget(self.status)
        self.import_btn.clicked.connect(lambda: window.actions_by_key["import"].trigger())
        self.demo_btn.clicked.connect(lambda: window.guarded("demo", self.load_demo))
        self.setVisible(False)

    def update_from(self, snapshot: Any) -> None:
        self.setVisible(self.proc is not None or not snapshot.models())

    # -- the demo (a child process) ---------------------------------------------------------------
    def load_demo(self) -> QProcess | None:
        from relman.ui.catalog_chooser import folder_kind, not_a_catalog_message

        if self.proc is not None:
            return self.proc
        folder = self.demo_folder
        kind = folder_kind(folder)
        if kind in ("other", "file"):
            raise RelmanError(not_a_catalog_message(folder))
        if kind == "catalog" and self._has_models(folder):
            self.main.open_catalog(folder)
            return None
        from relman.jobs.launch import child_env, relman_argv

        argv = relman_argv("--catalog", str(folder), *DEMO_ARGS, *self.demo_extra_args)
        proc = QProcess(self)
        env = QProcessEnvironment()
        for k, v in child_env({"QT_QPA_PLATFORM": "offscreen"}).items():
            env.insert(k, v)
        proc.setProcessEnvironment(env)
        proc.setProgram(argv[0])
        proc.setArguments(argv[1:])
        proc.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        proc.readyReadStandardOutput.connect(lambda: self._progress(proc))
        proc.finished.connect(lambda code, _s: self._finished(proc, code))
        self.proc = proc
        self.demo_btn.setEnabled(False)
        self.import_btn.setEnabled(False)
        self.status.setText(f"Building the demo catalog in {folder}… (about a minute; the window stays usable)")
        proc.start()
        return proc

    @staticmethod
    def _has_models(folder: Path) -> bool:
        import sqlite3

        try:
            with sqlite3.connect(f"file:{folder / 'catalog.db'}?mode=ro", uri=True) as conn:
                return bool(conn.execute("SELECT COUNT(*) FROM models").fetchone()[0])
        except sqlite3.Error:
            return False

    def _progress(self, proc: QProcess) -> None:
        text = bytes(proc.readAllStandardOutput().data()).decode("utf-8", "replace")
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if lines:
            self._last_line = lines[-1]
            self.status.setText(f"Building the demo catalog: {self._last_line[:160]}")

    def _finished(self, proc: QProcess, code: int) -> None:
        self._progress(proc)
        self.proc = None
        self.demo_btn.setEnabled(True)
        self.import_btn.setEnabled(True)
        if code != 0 or not self._has_models(self.demo_folder):
            self.status.setText(f"The demo could not be built: {self._last_line or f'exit code {code}'}")
            self.main.show_error(f"The demo catalog could not be built ({self._last_line or f'exit code {code}'})")
            return
        self.status.setText("")
        self.main.open_catalog(self.demo_folder)
        self.main.show_info(f"Opened the demo catalog at {self.demo_folder}")


def install_empty_hint(window: Any) -> EmptyCatalogHint:
    """Put the hint above the views (below the integrity banner) and keep it in step with the catalog."""
    hint = EmptyCatalogHint(window)
    column = window.centralWidget().layout()
    column.insertWidget(1, hint)
    window.snapshot_changed.connect(lambda: hint.update_from(window.snapshot))
    hint.update_from(window.snapshot)
    return hint
