"""Audit view: the append-only event log (newest first) and a Verify button that re-checks
the hash chain (`Catalog.verify_audit`) and says plainly whether it is intact."""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QPlainTextEdit,
                               QPushButton, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from relman.catalog import Catalog

MAX_EVENTS = 1000
COLUMNS = ("Seq", "When", "Who", "What", "Model", "Version", "Details")


class AuditView(QWidget):
    name = "audit"
    title = "Audit"
    verified = Signal(bool, str)

    def __init__(self, window: Any = None) -> None:
        super().__init__()
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter events (kind, model, who…)")
        self.verify_btn = QPushButton("Verify audit chain")
        self.result = QLabel("")
        self.result.setObjectName("audit-result")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("audit-table")
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.setAlternatingRowColors(True)
        self.catalog: Catalog | None = window.catalog if window is not None else None
        self.events: list[dict[str, Any]] = []
        bar = QHBoxLayout()
        bar.addWidget(self.filter, 1)
        bar.addWidget(self.verify_btn)
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(self.result)
        self.detail = QPlainTextEdit()  # the selected event in full (the table cuts long details)
        self.detail.setObjectName("audit-detail")
        self.detail.setReadOnly(True)
        self.detail.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.detail.setPlaceholderText("Select an event to read it in full.")
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(self.detail)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        split.setSizes([750, 250])
        layout.addWidget(split, 1)
        self.shown_rows: list[dict[str, Any]] = []
        self.table.itemSelectionChanged.connect(self._show_detail)
        self.verify_btn.clicked.connect(self.verify)
        self.filter.textChanged.connect(lambda _: self._fill())

    def refresh(self, state: Any) -> None:
        self.read_events(state.catalog)
        from relman.catalog.integrity import current_problems

        try:  # cached per database state (the window's integrity banner ran it already)
            self.show_check(current_problems(state.catalog))
        except Exception as e:  # a locked database: say so rather than show a stale verdict
            self.result.setText(f"could not check the catalog right now: {e}")

    def apply_theme(self, dark: bool) -> None:
        pass  # the style sheet covers it

    def read_events(self, catalog: Catalog) -> None:
        self.catalog = catalog
        rows = catalog.query(f"SELECT seq, at, actor, kind, model, version, payload FROM events ORDER BY seq DESC "
                             f"LIMIT {MAX_EVENTS}")
        self.events = rows
        self._fill()

    def _fill(self) -> None:
        words = self.filter.text().lower().split()
        rows = [e for e in self.events
                if all(w in f"{e['kind']} {e['model']} {e['version']} {e['actor']} {e['payload']}".lower() for w in words)]
        self.shown_rows = rows
        self.table.setRowCount(len(rows))
        for r, e in enumerate(rows):
            try:
                payload = json.loads(e["payload"] or "{}")
            except ValueError:
                payload = {}
            details = ", ".join(f"{k}={v}" for k, v in payload.items() if v not in (None, "", [], {}))
            values = [str(e["seq"]), e["at"][:19].replace("T", " "), e["actor"], e["kind"], e["model"] or "",
                      e["version"] or "", details[:300]]
            for c, text in enumerate(values):
                item = QTableWidgetItem(text)
                if c == len(values) - 1 and details:
                    item.setToolTip("Select the row to read the event in full below")
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()
        last = len(COLUMNS) - 1
        self.table.setColumnWidth(last, min(self.table.columnWidth(last), 400))  # the pane below has it all

    def event_text(self, e: dict[str, Any]) -> str:
        """One event in full: its header line and every payload field, wrapped."""
        try:
            payload = json.loads(e["payload"] or "{}")
        except ValueError:
            payload = {"payload": e["payload"]}
        head = f"#{e['seq']}  {e['at'][:19].replace('T', ' ')}  {e['actor']}  {e['kind']}"
        if e.get("model"):
            head += f"  {e['model']}@{e['version'] or ''}".rstrip("@")
        body = "\n".join(f"{k}: {json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v}"
                         for k, v in payload.items())
        return head + ("\n\n" + body if body else "")

    def _show_detail(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows and rows[0].row() < len(self.shown_rows):
            self.detail.setPlainText(self.event_text(self.shown_rows[rows[0].row()]))

    def verify(self) -> tuple[bool, str]:
        if self.catalog is None:
            return False, "no catalog"
        from relman.catalog.integrity import check_state

        problems, _ = check_state(self.catalog)  # chain, its signed checkpoint, and every tracked row
        return self.show_check(problems)

    def show_check(self, problems: list[str]) -> tuple[bool, str]:
        """Show a check's result (from Verify, or the window's check on each catalog change)."""
        if self.catalog is None:
            return False, "no catalog"
        n = self.catalog.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        if problems:
            text = f"Audit chain BROKEN: {len(problems)} problem(s): " + "; ".join(str(p) for p in problems[:5])
            self.result.setStyleSheet("color: #c4453b; font-weight: bold;")
        else:
            text = f"Audit chain intact: {n} events verified."
            self.result.setStyleSheet("color: #2e9d57; font-weight: bold;")
        self.result.setText(text)
        self.verified.emit(not problems, text)
        return not problems, text
