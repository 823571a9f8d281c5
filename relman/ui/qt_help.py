"""Help: the keyboard shortcut sheet (generated from the window's actions, so it never goes
stale) and the About box (versions and the catalog in use)."""

from __future__ import annotations

import sys
from typing import Any

from PySide6.QtWidgets import (QAbstractItemView, QDialog, QDialogButtonBox, QHeaderView, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)


def shortcut_rows(window: Any) -> list[tuple[str, str]]:
    """(action, shortcut) for every action of the window that has a shortcut, menu order first."""
    rows: list[tuple[str, str]] = []
    for act in window.actions():
        key = act.shortcut().toString()
        if key:
            rows.append((act.text().rstrip("…").replace("&", ""), key))
    return rows


class ShortcutsDialog(QDialog):
    def __init__(self, window: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent or window)
        self.setWindowTitle("Keyboard shortcuts")
        rows = shortcut_rows(window)
        self.table = QTableWidget(len(rows), 2)
        self.table.setObjectName("shortcuts")
        self.table.setHorizontalHeaderLabels(["Action", "Shortcut"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for r, (text, key) in enumerate(rows):
            self.table.setItem(r, 0, QTableWidgetItem(text))
            self.table.setItem(r, 1, QTableWidgetItem(key))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(420, 520)


def about_text(window: Any) -> str:
    import PySide6
    import pyqtgraph

    import relman

    return (f"relman {relman.__version__}\n\nCatalog: {window.catalog.root}\n\n"
            f"Python {sys.version.split()[0]} · PySide6 {PySide6.__version__} · pyqtgraph {pyqtgraph.__version__}\n"
            "Heavy libraries (torch, transformers, onnxruntime) load only in worker processes.")
