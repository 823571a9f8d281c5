"""Overview: one row per model with what is released right now — the production version and
its key metrics, the staging version and its canary share, the newest candidate — and the
gate state of the next step. Double-click a row to open that model on the release board."""

from __future__ import annotations

from typing import Any

from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (QAbstractItemView, QHeaderView, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout,
                               QWidget)

from relman.ui.qt_board import BADGE_COLORS
from relman.ui.qt_models import fmt_metric
from relman.ui.snapshot import VersionRow

COLUMNS = ("Model", "Production", "Key metrics", "Staging (canary)", "Newest candidate", "Next gate", "Versions")


def _newest(rows: list[VersionRow], phase: str) -> VersionRow | None:
    of = [v for v in rows if v.phase == phase]
    return max(of, key=lambda v: v.created_at) if of else None


class OverviewView(QWidget):
    name = "overview"
    title = "Overview"

    def __init__(self, window: Any = None) -> None:
        super().__init__()
        self.window = window
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("overview-table")
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.cellDoubleClicked.connect(lambda row, _col: self.open_row(row))
        hint = QLabel("What is released now, per model. Double-click a model to open it on the release board.")
        hint.setObjectName("hint")
        layout = QVBoxLayout(self)
        layout.addWidget(hint)
        layout.addWidget(self.table, 1)
        self.models: list[str] = []
        self.gates: dict[str, tuple[str, str]] = {}
        self._ids: dict[str, int | None] = {}

    def refresh(self, state: Any) -> None:
        snap = state.snapshot
        metrics = snap.key_metrics(3)
        self.models = snap.models()
        self.gates = {}
        self.table.setRowCount(len(self.models))
        for r, model in enumerate(self.models):
            rows = snap.of_model(model)
            prod, staging, cand = snap.production(model), _newest(rows, "staging"), _newest(rows, "candidate")
            nxt = staging or cand
            gate = ("none", "")
            if nxt is not None and self.window is not None:
                gate = self.window.release.gate_status(nxt)
            self.gates[model] = gate
            self._ids[model] = (prod or nxt or (rows[-1] if rows else None)).id if rows else None
            key = "  ".join(f"{m} {fmt_metric(prod.metrics[m])}" for m in metrics if prod and m in prod.metrics)
            values = [model, prod.version if prod else "—", key,
                      f"{staging.version} ({staging.canary_share or 0:g}%)" if staging else "—",
                      cand.version if cand else "—", gate[1] if nxt else "", str(len(rows))]
            for c, text in enumerate(values):
                item = QTableWidgetItem(text)
                if c == 5 and nxt is not None:
                    item.setForeground(QBrush(QColor(BADGE_COLORS.get(gate[0], "#888"))))
                    item.setToolTip(f"{nxt.ref}: {gate[1]}")
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()

    def open_row(self, row: int) -> None:
        """Focus the model of `row` (its production version, else the next one) on the board."""
        if self.window is None or not 0 <= row < len(self.models):
            return
        model = self.models[row]
        vid = self._ids.get(model)
        if vid is not None:
            self.window.set_selection([vid], source=self.name)
        self.window.focus_model(model)
        self.window.show_view("board")

    def apply_theme(self, dark: bool) -> None:
        pass  # the style sheet covers it
