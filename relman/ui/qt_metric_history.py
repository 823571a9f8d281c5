"""The metric history of the selected version: every measurement ever stored, with conditions.

Re-evaluating appends (the catalog never overwrites a metric), so a version can have several
values of one metric. This dock lists them newest first, marks the current one per (suite,
metric, dataset, device) in bold, shows the 95 % interval where one was stored, and marks
values measured under load or beside other jobs (amber background, the reason in the tooltip)
so a number taken on a busy machine is never mistaken for a clean one. A metric chooser narrows
the list to one metric's history. Reads one small query per selection; nothing heavy imported.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import QComboBox, QDockWidget, QHBoxLayout, QLabel, QTableView, QVBoxLayout, QWidget

from relman.catalog.catalog import metric_key

ALL = "all metrics"
DISTURBED = QColor(255, 214, 153)


def disturbance(context: dict[str, Any]) -> str:
    """Why a measurement may not be a clean one ('' when nothing was seen)."""
    why = []
    if context.get("under_load"):
        why.append(f"measured under load (1-min load average {context.get('load_avg_1m') or 0:.2f} on "
                   f"{context.get('cpu_count') or '?'} cores)")
    others = context.get("other_jobs") or []
    if others or context.get("beside_jobs") or context.get("concurrent_jobs"):
        ids = ", ".join(str(j) for j in others) or str(context.get("concurrent_jobs"))
        why.append(f"measured beside other jobs ({ids})")
    return "; ".join(why)


def interval_text(context: dict[str, Any]) -> str:
    iv = context.get("interval")
    if isinstance(iv, (list, tuple)) and len(iv) == 2 and None not in iv:
        return f"[{iv[0]:.4g}, {iv[1]:.4g}]"
    return ""


class MetricHistoryModel(QAbstractTableModel):
    COLUMNS = ("Measured", "Suite", "Metric", "Value", "95 % interval", "Dataset", "Conditions")

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.rows: list[dict[str, Any]] = []
        self.current_ids: set[int] = set()

    def set_rows(self, rows: list[dict[str, Any]]) -> None:
        self.beginResetModel()
        newest: dict[tuple[Any, ...], int] = {}
        for r in rows:
            newest[metric_key(r)] = r["id"]
        self.current_ids = set(newest.values())
        self.rows = sorted(rows, key=lambda r: r["id"], reverse=True)
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section]
        return None

    def cell(self, row: int, column: int) -> str:
        r = self.rows[row]
        ctx = r["context"]
        if column == 0:
            return r["measured_at"][:19].replace("T", " ")
        if column == 1:
            return r["suite"]
        if column == 2:
            return r["name"]
        if column == 3:
            return "" if r["value"] is None else f"{r['value']:.6g}"
        if column == 4:
            return interval_text(ctx)
        if column == 5:
            return r.get("dataset") or ctx.get("dataset") or ""
        marks = []
        if disturbance(ctx):
            marks.append("⚠ " + ("under load" if ctx.get("under_load") else "") +
                         (" + " if ctx.get("under_load") and ctx.get("other_jobs") else "") +
                         ("beside jobs" if ctx.get("other_jobs") or ctx.get("concurrent_jobs") else ""))
        if ctx.get("device"):
            marks.append(str(ctx["device"]) + (f", {ctx['threads']} threads" if ctx.get("threads") else ""))
        if r["id"] in self.current_ids:
            marks.append("current")
        return "; ".join(marks)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        r = self.rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return self.cell(index.row(), index.column())
        if role == Qt.ItemDataRole.BackgroundRole and disturbance(r["context"]):
            return QBrush(DISTURBED)
        if role == Qt.ItemDataRole.ForegroundRole and disturbance(r["context"]):
            return QBrush(QColor(40, 30, 0))
        if role == Qt.ItemDataRole.ToolTipRole:
            return disturbance(r["context"]) or "no other jobs or load seen during this measurement"
        if role == Qt.ItemDataRole.FontRole and r["id"] in self.current_ids:
            f = QFont()
            f.setBold(True)
            return f
        return None


class MetricHistoryView(QWidget):
    """History of one version's metrics (all measurements, or one metric's)."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setObjectName("metric-history")
        self.catalog: Any = None
        self.version_id: int | None = None
        self.title = QLabel("Select a version to see its measurements")
        self.title.setObjectName("hint")
        self.chooser = QComboBox()
        self.chooser.setObjectName("metric-history-chooser")
        self.chooser.addItem(ALL)
        self.chooser.currentTextChanged.connect(lambda _t: self._fill())
        self.model = MetricHistoryModel(self)
        self.table = QTableView()
        self.table.setObjectName("metric-history-table")
        self.table.setModel(self.model)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.chooser)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(self.table, 1)
        self._all: list[dict[str, Any]] = []

    def show_version(self, catalog: Any, version_id: int | None) -> None:
        self.catalog, self.version_id = catalog, version_id
        self.refresh()

    def refresh(self) -> None:
        if self.catalog is None or self.version_id is None:
            self._all = []
            self.title.setText("Select a version to see its measurements")
        else:
            try:
                v = self.catalog.get_version(self.version_id)
            except Exception:  # deleted meanwhile
                self.version_id = None
                return self.refresh()
            self._all = self.catalog.metrics(self.version_id, latest=False)
            n_bad = sum(1 for r in self._all if disturbance(r["context"]))
            self.title.setText(f"{v.ref}: {len(self._all)} measurement(s)"
                               + (f", {n_bad} under load or beside other jobs" if n_bad else ""))
        keep = self.chooser.currentText()
        self.chooser.blockSignals(True)
        self.chooser.clear()
        names = sorted({r["name"] for r in self._all})
        self.chooser.addItems([ALL, *names])
        self.chooser.setCurrentText(keep if keep in names else ALL)
        self.chooser.blockSignals(False)
        self._fill()

    def show_metric(self, name: str) -> None:
        self.chooser.setCurrentText(name)

    def _fill(self) -> None:
        name = self.chooser.currentText()
        self.model.set_rows([r for r in self._all if name in ("", ALL) or r["name"] == name])


def install_metric_history(window: Any) -> MetricHistoryView:
    """Add the history as a dock under the window's views; it follows the window's selection
    (`window.selection`) and re-reads when the catalog changes (`snapshot_changed`)."""
    view = MetricHistoryView()
    dock = QDockWidget("Metric history", window)
    dock.setObjectName("metric-history-dock")
    dock.setWidget(view)
    window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)

    def follow() -> None:
        ids = list(window.selection.ids)
        view.show_version(window.catalog, ids[0] if ids else None)

    window.selection.changed.connect(lambda _ids: follow())
    window.snapshot_changed.connect(follow)
    view.follow = follow  # type: ignore[attr-defined]
    return view
