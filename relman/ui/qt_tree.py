"""The Models dock: a tree of models and their newest versions (navigation).

Clicking a version selects it (the shared selection); clicking a model focuses it: the
versions table filters to it and the model-scoped views (board, lineage, compare) show it.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QTreeWidget, QTreeWidgetItem

from relman.ui.qt_models import PHASE_COLORS
from relman.ui.snapshot import Snapshot, VersionRow

VERSIONS_PER_MODEL = 50  # the newest per model; the table has them all


class ModelTree(QTreeWidget):
    def __init__(self, window: Any) -> None:
        super().__init__()
        self.window = window
        self.setObjectName("model-tree")
        self.setHeaderLabels(["Model / version", "Phase"])
        self.setMinimumWidth(190)
        self.brushes = {p: QBrush(QColor(c)) for p, c in PHASE_COLORS.items()}
        self.itemSelectionChanged.connect(self._on_selection)

    def fill(self, snapshot: Snapshot) -> None:
        self.blockSignals(True)
        expanded = {self.topLevelItem(i).text(0) for i in range(self.topLevelItemCount())
                    if self.topLevelItem(i).isExpanded()}
        self.clear()
        groups: dict[str, list[VersionRow]] = {}
        for v in snapshot.versions:
            groups.setdefault(v.model, []).append(v)
        for model, rows in groups.items():
            top = QTreeWidgetItem([model, f"{len(rows)} versions"])
            top.setData(0, Qt.ItemDataRole.UserRole, ("model", model))
            for v in rows[-VERSIONS_PER_MODEL:]:
                child = QTreeWidgetItem([v.version, v.phase])
                child.setData(0, Qt.ItemDataRole.UserRole, ("version", v.id))
                child.setForeground(1, self.brushes.get(v.phase) or child.foreground(1))
                top.addChild(child)
            self.addTopLevelItem(top)
            top.setExpanded(model in expanded or len(groups) <= 3)
        self.resizeColumnToContents(0)
        self.blockSignals(False)

    def _on_selection(self) -> None:
        items = self.selectedItems()
        if not items:
            return
        kind, value = items[0].data(0, Qt.ItemDataRole.UserRole)
        if kind == "version":
            self.window.set_selection([value], source="tree")
        else:
            self.window.focus_model(value, filter_table=True)
