"""Diff view: what changed between two versions — per tensor and in the architecture.

Pick A and B (the selection fills them: two selected versions, or one and its parent), press
Compare. The view never reads a weight file: the work controller queues one "diff_versions"
job (relman.app.diff), the view follows its row and, when it has succeeded, shows a summary
line, the architecture changes (config.json keys, relman's surgery record) and a table of
tensors, most changed first (relative change ‖B−A‖/‖A‖, cosine, zeros before → after, dtype and
shape changes, tensors in only one of them). "Show unchanged" lists the rest too.
"""

from __future__ import annotations

from typing import Any, Callable

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar,
                               QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

FINISHED = ("succeeded", "failed", "cancelled")
COLUMNS = ["Tensor", "Status", "Rel. change", "Cosine", "Zeros A → B", "dtype", "Shape"]


def _num(v: Any, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


class DiffView(QWidget):
    """The Diff tab (registered in relman.ui.views)."""

    name = "diff"
    title = "Diff"
    results_shown = Signal(int)

    def __init__(self, window: Any = None) -> None:
        super().__init__()
        self.window = window
        self.catalog: Any = window.catalog if window is not None else None
        self.pending: int | None = None
        self.result: dict[str, Any] | None = None
        self.on_error: Callable[[str], None] = (window.show_error if window is not None
                                                 else (lambda text: self.status.setText(text)))
        root = QVBoxLayout(self)
        bar = QHBoxLayout()
        self.a = QComboBox()
        self.a.setObjectName("diff-a")
        self.b = QComboBox()
        self.b.setObjectName("diff-b")
        for combo in (self.a, self.b):
            combo.setMinimumContentsLength(16)
        self.run_button = QPushButton("Compare")
        self.run_button.setObjectName("diff-run")
        self.run_button.clicked.connect(self.queue_job)
        self.all = QCheckBox("Show unchanged")
        self.all.setObjectName("diff-all")
        self.all.toggled.connect(lambda _: self.result is not None and self.show_result(self.result))
        bar.addWidget(QLabel("A"))
        bar.addWidget(self.a, 1)
        bar.addWidget(QLabel("B"))
        bar.addWidget(self.b, 1)
        bar.addWidget(self.run_button)
        bar.addWidget(self.all)
        root.addLayout(bar)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        root.addWidget(self.progress)
        self.status = QLabel("Choose two versions and press Compare.")
        self.status.setObjectName("hint")
        self.status.setWordWrap(True)
        root.addWidget(self.status)
        self.config = QPlainTextEdit()
        self.config.setObjectName("diff-config")
        self.config.setReadOnly(True)
        self.config.setMaximumHeight(90)
        self.config.setPlaceholderText("Architecture changes (config.json) appear here")
        root.addWidget(self.config)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("diff-table")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSortingEnabled(False)
        root.addWidget(self.table, 1)
        self.timer = QTimer(self)
        self.timer.setInterval(300)
        self.timer.timeout.connect(self.poll_job)

    # -- the view protocol (relman.ui.views) --------------------------------------------------
    def refresh(self, state: Any) -> None:
        self.catalog = state.catalog
        versions = list(state.snapshot.versions)
        refs = [v.ref for v in versions]
        by_id = {v.id: v for v in versions}
        keep = (self.a.currentText(), self.b.currentText())
        for combo in (self.a, self.b):
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(refs)
            combo.blockSignals(False)
        chosen = [by_id[i] for i in state.selected if i in by_id]
        parents = sorted((e for e in state.snapshot.edges if chosen and e.child_id == chosen[0].id),
                         key=lambda e: e.position)
        if len(chosen) >= 2:
            pair = (chosen[0].ref, chosen[1].ref)
        elif len(chosen) == 1 and parents:
            pair = (by_id[parents[0].parent_id].ref, chosen[0].ref)  # a version against its parent
        else:
            pair = keep
        self.set_pair(*pair)

    def on_selection(self, state: Any) -> None:
        self.refresh(state)

    def on_jobs(self, catalog: Any) -> None:
        if self.pending is not None:
            self.poll_job()

    def apply_theme(self, dark: bool) -> None:
        pass

    def set_pair(self, a: str, b: str) -> None:
        for combo, ref in ((self.a, a), (self.b, b)):
            i = combo.findText(ref)
            if i >= 0:
                combo.setCurrentIndex(i)

    # -- the job ----------------------------------------------------------------------------
    def queue_job(self) -> int | None:
        from relman.app.diff import queue_diff
        from relman.errors import RelmanError

        a, b = self.a.currentText(), self.b.currentText()
        if self.catalog is None or not a or not b:
            self.on_error("choose two versions to compare")
            return None
        if self.window is not None:
            job = self.window.work.queue_diff(a, b)
        else:
            try:
                job = queue_diff(self.catalog, a, b)
            except RelmanError as e:
                self.on_error(str(e))
                job = None
        if job is None:
            return None
        self.pending = job
        self.run_button.setEnabled(False)
        self.progress.setValue(0)
        self.progress.setVisible(True)
        self.status.setText(f"comparing {a} and {b} (job {job})")
        self.timer.start()
        return job

    def poll_job(self) -> None:
        if self.pending is None or self.catalog is None:
            self.timer.stop()
            return
        rows = self.catalog.query("SELECT status, progress, message, error FROM jobs WHERE id = ?", [self.pending])
        if not rows:
            return
        r = rows[0]
        self.progress.setValue(int(100 * (r["progress"] or 0)))
        if r["status"] not in FINISHED:
            return
        job, self.pending = self.pending, None
        self.timer.stop()
        self.progress.setVisible(False)
        self.run_button.setEnabled(True)
        if r["status"] != "succeeded":
            self.on_error(f"comparison job {job} {r['status']}: {r['error'] or ''}")
            return
        from relman.app.diff import result_of

        result = result_of(self.catalog, job)
        if result:
            self.show_result(result)
            self.results_shown.emit(job)

    # -- results ----------------------------------------------------------------------------
    def show_result(self, result: dict[str, Any]) -> None:
        from relman.app.diff import render
        from relman.names import terminal_safe

        self.result = result
        self.status.setText(render(result, top=0).splitlines()[0])
        self.config.setPlainText("\n".join(f"{terminal_safe(c['key'])}: {c['a']!r} → {c['b']!r}"
                                           for c in result["config"]) or "no architecture change")
        rows = [t for t in result["tensors"] if self.all.isChecked() or t["status"] != "unchanged"]
        self.table.setRowCount(len(rows))
        for i, t in enumerate(rows):
            dtype = t["dtype_a"] if t["dtype_a"] == t["dtype_b"] else f"{t['dtype_a']} → {t['dtype_b']}"
            shape = str(t["shape_a"]) if t["shape_a"] == t["shape_b"] else f"{t['shape_a']} → {t['shape_b']}"
            zeros = ("" if t["sparsity_a"] is None else f"{t['sparsity_a']:.1%} → {t['sparsity_b']:.1%}")
            cells = [terminal_safe(t["name"]), t["status"].replace("_", " "), _num(t["relative_norm"], ".4g"),
                     _num(t["cosine"], ".4f"), zeros, dtype or "", shape]
            for j, text in enumerate(cells):
                self.table.setItem(i, j, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()

    def row_names(self) -> list[str]:
        return [self.table.item(i, 0).text() for i in range(self.table.rowCount())]
