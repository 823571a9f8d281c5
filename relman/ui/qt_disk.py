"""Disk view: where the catalog's bytes go (models, versions, datasets), sortable, with a bar
chart of unique vs shared bytes; and the status-bar label with catalog size and free space.

The report comes from `relman du --json` run as a child process (walking a large store must
never block the window); the status label uses `relman.app.disk.space_status`, one SQL sum
and one statvfs call, cheap enough for the poll timer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QProcess, QProcessEnvironment, QRectF, QSortFilterProxyModel, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPainter, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QHBoxLayout, QHeaderView, QLabel, QPushButton,
                               QTableView, QVBoxLayout, QWidget)

from relman.units import human_size

SORT_ROLE = Qt.ItemDataRole.UserRole + 1
KINDS = ("Models", "Versions", "Datasets")
CHART_BARS = 12


class BarChart(QWidget):
    """Horizontal bars, one per row: unique bytes dark, shared bytes light (painted, no plot library)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.items: list[tuple[str, int, int]] = []  # label, unique, shared
        self.setMinimumHeight(160)
        self.setObjectName("disk-chart")

    def set_data(self, items: list[tuple[str, int, int]]) -> None:
        self.items = items[:CHART_BARS]
        self.update()

    def paintEvent(self, _event: Any) -> None:  # noqa: N802 (Qt)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        if not self.items:
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "no data yet")
            return
        label_w, pad, legend_h = 170, 4, 18
        p.setPen(self.palette().text().color())
        p.fillRect(QRectF(label_w, 3, 12, 12), QColor("#3b82c4"))
        p.drawText(QRectF(label_w + 16, 0, 120, legend_h), Qt.AlignmentFlag.AlignVCenter, "unique")
        p.fillRect(QRectF(label_w + 80, 3, 12, 12), QColor("#a9c8e8"))
        p.drawText(QRectF(label_w + 96, 0, 200, legend_h), Qt.AlignmentFlag.AlignVCenter, "shared (stored once)")
        bar_h = min(22.0, max(8.0, (self.height() - legend_h - pad) / len(self.items) - pad))
        top = max(1, max(u + s for _, u, s in self.items))
        width = max(10, self.width() - label_w - 90)
        for i, (label, unique, shared) in enumerate(self.items):
            y = legend_h + pad + i * (bar_h + pad)
            p.setPen(self.palette().text().color())
            p.drawText(QRectF(0, y, label_w - 6, bar_h), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                       label[:28])
            wu, ws = width * unique / top, width * shared / top
            p.fillRect(QRectF(label_w, y, wu, bar_h), QColor("#3b82c4"))
            p.fillRect(QRectF(label_w + wu, y, ws, bar_h), QColor("#a9c8e8"))
            p.drawText(QRectF(label_w + wu + ws + 6, y, 90, bar_h), Qt.AlignmentFlag.AlignVCenter,
                       human_size(unique + shared))


class DiskView(QWidget):
    """Bytes by model / version / dataset (sortable), the chart, totals, and a gc button."""

    name = "disk"
    title = "Disk"
    gc_requested = Signal()
    report_ready = Signal(dict)
    failed = Signal(str)

    def __init__(self, window: Any, parent: QWidget | None = None) -> None:
        """`window`: the main window (its catalog is measured; Collect garbage goes to its
        catalog actions), or a catalog folder / a callable returning one."""
        super().__init__(parent)
        if hasattr(window, "catalog_actions"):
            self._root: Any = lambda: window.catalog.root  # follows the window to another catalog
        else:
            self._root = window
        self.report: dict[str, Any] | None = None
        self.stale = True
        self.proc: QProcess | None = None
        self.kind = QComboBox()
        self.kind.setObjectName("disk-kind")
        self.kind.addItems(list(KINDS))
        self.kind.currentTextChanged.connect(lambda _: self._fill())
        self.summary = QLabel("Disk use not measured yet")
        self.summary.setObjectName("disk-summary")
        self.summary.setWordWrap(True)
        self.refresh_btn = QPushButton("Measure")
        self.refresh_btn.clicked.connect(self.refresh)
        self.gc_btn = QPushButton("Collect garbage")
        self.gc_btn.setToolTip("relman gc: remove blobs nothing references and old job logs")
        self.gc_btn.clicked.connect(self.gc_requested.emit)
        self.model = QStandardItemModel(0, 5, self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.table = QTableView()
        self.table.setObjectName("disk-table")
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.chart = BarChart()
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Show"))
        bar.addWidget(self.kind)
        bar.addStretch(1)
        bar.addWidget(self.refresh_btn)
        bar.addWidget(self.gc_btn)
        lay = QVBoxLayout(self)
        lay.addLayout(bar)
        lay.addWidget(self.summary)
        lay.addWidget(self.table, 2)
        lay.addWidget(self.chart, 1)
        if hasattr(window, "catalog_actions"):
            self.gc_requested.connect(lambda: window.guarded("gc", window.catalog_actions.collect_garbage))

    @property
    def catalog_root(self) -> Path:
        return Path(self._root() if callable(self._root) else self._root)

    def apply_theme(self, dark: bool) -> None:
        pass  # the chart paints with the palette

    # -- measuring (a child `relman du --json`) ----------------------------------------------
    def refresh(self, state: Any = None) -> QProcess | None:
        """Measure again in a child process; `report_ready` fires with the result. (The
        window calls this when the view is shown after the catalog changed.)"""
        if self.proc is not None:
            return self.proc
        from relman.jobs.launch import child_env, relman_argv

        argv = relman_argv("--catalog", str(self.catalog_root), "du", "--json")
        proc = QProcess(self)
        env = QProcessEnvironment()
        for k, v in child_env().items():
            env.insert(k, v)
        proc.setProcessEnvironment(env)
        proc.setProgram(argv[0])
        proc.setArguments(argv[1:])
        proc.finished.connect(lambda code, _s: self._finished(proc, code))
        self.proc = proc
        self.refresh_btn.setEnabled(False)
        self.summary.setText("Measuring disk use…")
        proc.start()
        return proc

    def refresh_if_stale(self) -> None:
        if self.stale:
            self.refresh()

    def _finished(self, proc: QProcess, code: int) -> None:
        out = bytes(proc.readAllStandardOutput().data()).decode("utf-8", "replace")
        err = bytes(proc.readAllStandardError().data()).decode("utf-8", "replace").strip()
        self.proc = None
        self.refresh_btn.setEnabled(True)
        try:
            report = json.loads(out) if code == 0 else None
        except ValueError:
            report = None
        if report is None:
            msg = (err.splitlines() or [f"exit code {code}"])[-1]
            self.summary.setText(f"Could not measure disk use: {msg}")
            self.failed.emit(msg)
            return
        self.set_report(report)

    # -- showing --------------------------------------------------------------------------
    def set_report(self, report: dict[str, Any]) -> None:
        self.report = report
        self.stale = False
        t = report["totals"]
        self.summary.setText(
            f"Catalog {human_size(t['catalog_bytes'])} on disk, {human_size(report['free_bytes'])} free. "
            f"Blobs {human_size(t['blob_bytes'])}: unique {human_size(t['unique_bytes'])}, shared (stored once) "
            f"{human_size(t['shared_bytes'])}, unreferenced {human_size(t['garbage_bytes'])}. "
            f"Database {human_size(t['db_bytes'])}, logs {human_size(t['logs_bytes'])}, "
            f"scratch {human_size(t['tmp_bytes'])}.")
        self._fill()
        self.report_ready.emit(report)

    def rows(self) -> list[dict[str, Any]]:
        if not self.report:
            return []
        kind = self.kind.currentText()
        if kind == "Models":
            return [{"name": r["model"], "detail": f"{r['versions']} versions", **r} for r in self.report["models"]]
        if kind == "Versions":
            return [{"name": r["ref"], "detail": r["phase"] + (f", archived in {r['archived_to']}"
                                                              if r["archived_to"] else ""), **r}
                    for r in self.report["versions"]]
        return [{"name": r["dataset"], "detail": "dataset", **r} for r in self.report["datasets"]]

    def _fill(self) -> None:
        rows = self.rows()
        self.model.clear()
        self.model.setHorizontalHeaderLabels(["Name", "Bytes", "Unique", "Shared", "Details"])
        for r in rows:
            cells = []
            for key in ("name", "bytes", "unique_bytes", "shared_bytes", "detail"):
                value = r[key]
                item = QStandardItem(human_size(value) if isinstance(value, int) else str(value))
                item.setData(value, SORT_ROLE)
                item.setEditable(False)
                if isinstance(value, int):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                cells.append(item)
            self.model.appendRow(cells)
        self.table.sortByColumn(1, Qt.SortOrder.DescendingOrder)
        self.table.horizontalHeader().resizeSection(0, 220)
        self.chart.set_data([(r["name"], r["unique_bytes"], r["shared_bytes"]) for r in
                             sorted(rows, key=lambda r: -r["bytes"])])


class DiskStatusLabel(QLabel):
    """Status-bar text: catalog size and free disk; warns (in red) below the threshold."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("disk-status")
        self.low = False
        self.timer: QTimer | None = None

    def follow(self, catalog_of: Callable[[], Any], interval_ms: int = 15_000) -> None:
        """Re-read every `interval_ms` too: free space changes without the catalog changing."""
        if self.timer is not None:
            self.timer.stop()
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(lambda: self.update_from(catalog_of()))
        self.timer.start()

    def update_from(self, catalog: Any) -> None:
        from relman.app.disk import space_status

        try:
            s = space_status(catalog)
        except Exception as e:  # a vanished folder or locked database must not break the window
            self.setText(f"disk: {e}")
            return
        self.low = s["low"]
        self.setText(s["text"])
        self.setToolTip(f"warning below {human_size(s['warn_below'])} free (setting disk.warn_free_bytes)")
        self.setStyleSheet("color: #c4453b; font-weight: bold;" if self.low else "")
