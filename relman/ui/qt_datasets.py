"""Datasets view: every registered dataset with its format, kind, rows, labels, splits and
size, read from the catalog (what `relman dataset list/show` print). Register one with
File › Register dataset…; evaluation and compression dialogs offer these names."""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtWidgets import (QAbstractItemView, QHeaderView, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout,
                               QWidget)

from relman.units import human_size

COLUMNS = ("Name", "Format", "Kind", "Rows", "Labels", "Splits", "Size", "Registered", "By")


def read_datasets(catalog: Any) -> list[dict[str, Any]]:
    rows = catalog.query(
        "SELECT d.id, d.name, d.format, d.kind, d.n_rows, d.labels, d.meta, d.created_at, d.created_by,"
        " (SELECT TOTAL(size) FROM dataset_files f WHERE f.dataset_id = d.id) AS size"
        " FROM datasets d ORDER BY d.name")
    for r in rows:
        for key, empty in (("labels", []), ("meta", {})):
            try:
                r[key] = json.loads(r[key] or "null") or empty
            except ValueError:
                r[key] = empty
    return rows


def _splits(meta: dict[str, Any]) -> str:
    counts = meta.get("split_counts") or {}
    return ", ".join(f"{k} {v}" for k, v in counts.items()) if isinstance(counts, dict) else ""


class DatasetsView(QWidget):
    name = "datasets"
    title = "Datasets"

    def __init__(self, window: Any = None) -> None:
        super().__init__()
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("datasets-table")
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.summary = QLabel("")
        self.summary.setObjectName("hint")
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 1)
        self.rows: list[dict[str, Any]] = []

    def refresh(self, state: Any) -> None:
        self.rows = read_datasets(state.catalog)
        self.table.setRowCount(len(self.rows))
        for r, d in enumerate(self.rows):
            labels = ", ".join(map(str, d["labels"][:8])) + (f" … ({len(d['labels'])})" if len(d["labels"]) > 8 else "")
            values = [d["name"], d["format"], d["kind"], str(d["n_rows"]), labels, _splits(d["meta"]),
                      human_size(int(d["size"] or 0)), (d["created_at"] or "")[:16].replace("T", " "),
                      d["created_by"] or ""]
            for c, text in enumerate(values):
                item = QTableWidgetItem(text)
                if c == 4 and d["labels"]:
                    item.setToolTip(", ".join(map(str, d["labels"])))
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()
        self.summary.setText(f"{len(self.rows)} dataset{'s' if len(self.rows) != 1 else ''} registered"
                             if self.rows else "No datasets yet: File › Register dataset… (or `relman dataset add`).")

    def apply_theme(self, dark: bool) -> None:
        pass  # the style sheet covers it
