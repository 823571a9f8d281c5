"""The Versions view: every version in one sortable, filterable table (filter bar on top).

Selecting rows writes the shared selection; a selection made elsewhere (tree, board, plots)
is mirrored here at once, also while the tab is hidden, because it is cheap (one
QItemSelection built from the Python row list) and the table is where people look for it.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                               QTableView, QVBoxLayout, QWidget)

from relman.ui.qt_models import VersionsFilterProxy, VersionsTableModel
from relman.ui.snapshot import PHASE_ORDER
from relman.ui.views import ViewState

COLUMN_WIDTHS = {"Model": 150, "Version": 80, "Phase": 110, "Format": 100, "Size": 90, "Params": 80,
                 "Recipe": 160, "Created": 140, "Tags": 100}


class VersionsView(QWidget):
    name = "versions"
    title = "Versions"
    follows_selection_hidden = True
    eager = True  # refreshed on every catalog change, shown or not (the count and tree follow it)

    def __init__(self, window: Any) -> None:
        super().__init__()
        self.window = window
        self.model = VersionsTableModel(self)
        self.proxy = VersionsFilterProxy(self)
        self.proxy.setSourceModel(self.model)
        self.table = QTableView()
        self.table.setObjectName("versions-table")
        self.table.setModel(self.proxy)
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
        self.model.modelReset.connect(lambda: self.select_rows(set(window.selection.ids)))
        self.filter_edit = QLineEdit()
        self.filter_edit.setObjectName("filter")
        self.filter_edit.setPlaceholderText("Filter versions: words, tag:fast, recipe:int8, accuracy>0.9… (Ctrl+F)")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.textChanged.connect(lambda t: self.proxy.set_filter(text=t) or self.update_count())
        self.phase_filter = QComboBox()
        self.phase_filter.setObjectName("phase-filter")
        self.phase_filter.addItems(["all phases", *PHASE_ORDER])
        self.phase_filter.currentTextChanged.connect(
            lambda t: self.proxy.set_filter(phase="" if t == "all phases" else t) or self.update_count())
        self.count_label = QLabel("")
        self.count_label.setObjectName("hint")
        layout = QVBoxLayout(self)
        bar = QHBoxLayout()
        bar.addWidget(self.filter_edit, 1)
        bar.addWidget(self.phase_filter)
        bar.addWidget(self.count_label)
        layout.addLayout(bar)
        layout.addWidget(self.table, 1)

    # -- the view protocol ------------------------------------------------------------------
    def refresh(self, state: ViewState) -> None:
        self.model.set_snapshot(state.snapshot)  # a model reset: the proxy re-filters by itself
        header = self.table.horizontalHeader()
        for c, col in enumerate(self.model.columns):
            header.resizeSection(c, COLUMN_WIDTHS.get(col[0], 120))
        if state.selected:
            self.select_rows(set(state.selected))
        self.update_count()

    def on_selection(self, state: ViewState) -> None:
        if set(state.selected) != set(self.selected_ids()):  # e.g. not the table's own click
            self.select_rows(set(state.selected))

    def apply_theme(self, dark: bool) -> None:
        pass  # the style sheet covers it

    # -- filtering ---------------------------------------------------------------------------
    def update_count(self) -> None:
        error = getattr(self.model, "filter_error", "")  # a half-typed query: words only, and why
        # said beside the count too, so a typo (an unknown metric) never just finds nothing
        self.count_label.setText(f"{self.proxy.rowCount()} of {self.model.total_rows} versions"
                                 + (f" — {error if len(error) <= 90 else error[:89] + '…'}" if error else ""))
        self.filter_edit.setToolTip(error or "Words, tag:/recipe:/phase:/model:/format:/task:, or accuracy>0.9")
        self.filter_edit.setStyleSheet("QLineEdit { color: #b07a1e; }" if error else "")

    def filter_model(self, model: str) -> None:
        """Show only `model`'s versions ('' = all)."""
        self.proxy.set_filter(model=model)
        self.update_count()

    def focus_filter(self) -> None:
        self.filter_edit.setFocus()
        self.filter_edit.selectAll()

    # -- selection ---------------------------------------------------------------------------
    def select_rows(self, ids: set[int]) -> None:
        sm = self.table.selectionModel()
        if not ids and not sm.hasSelection():
            return
        from PySide6.QtCore import QItemSelection, QItemSelectionModel

        sm.blockSignals(True)
        self.table.clearSelection()
        sel = QItemSelection()
        last = self.model.columnCount() - 1
        for row, v in enumerate(self.model.rows):  # Python list, not 10,000 Qt calls
            if v.id in ids:
                sel.select(self.proxy.mapFromSource(self.model.index(row, 0)),
                           self.proxy.mapFromSource(self.model.index(row, last)))
        sm.select(sel, QItemSelectionModel.SelectionFlag.Select)
        sm.blockSignals(False)
        self.table.viewport().update()

    def selected_ids(self) -> list[int]:
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        return [self.proxy.version_id(r) for r in rows]

    def _on_table_selection(self) -> None:
        self.window.set_selection(self.selected_ids(), source=self.name)
