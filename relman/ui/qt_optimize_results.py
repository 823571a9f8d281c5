"""The candidates of an accuracy-aware search (`relman optimize`), as a table.

The "optimize" job stores its whole result in the job row (`relman.compress.optimize.run`:
the parent's figures, every tried candidate's, the failures, the chosen `best`); until now the
window showed it only as JSON lines in the job's log. This dialog lists every candidate with
its figures — quality and its drop, size, the paired latency ratio with its 95 % interval,
whether it is within the budget, beats the parent, lies on the Pareto front — the parent on
top as the reference, failed candidates with their reason, and the chosen one marked (★,
bold). Double-clicking a row selects that version in the window. It reads the catalog only.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDialog, QDialogButtonBox, QHBoxLayout, QHeaderView,
                               QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from relman.errors import RelmanError

COLUMNS = ("Chosen", "Candidate", "Version", "Recipe", "Quality", "Drop", "Size", "Latency ratio", "95 % interval",
           "Within budget", "Beats parent", "Pareto", "Note")
CHOSEN_MARK = "★ chosen"


def optimize_jobs(catalog: Any) -> list[dict[str, Any]]:
    """Finished optimize jobs with a result, newest first."""
    from relman.jobs.queue import SUCCEEDED, list_jobs

    return [j for j in list_jobs(catalog, statuses=[SUCCEEDED], kind="optimize", limit=200) if j.get("result")]


def candidate_rows(result: dict[str, Any]) -> list[dict[str, str]]:
    """One row per candidate (the parent first, then the tried ones in search order, then the
    failed ones), each cell as text."""
    from relman.units import human_size

    best = result.get("best")
    max_drop = result.get("max_drop")

    def num(x: Any, digits: int = 4) -> str:
        return "" if x is None else f"{float(x):.{digits}f}"

    def yes(flag: Any) -> str:
        return "yes" if flag else "no"

    rows = []
    parent = result.get("parent") or {}
    for i, f in enumerate([parent] + list(result.get("tried") or [])):
        if not f:
            continue
        iv = f.get("latency_ratio_interval")
        is_parent = i == 0
        within = f.get("drop") is not None and max_drop is not None and float(f["drop"]) <= float(max_drop)
        rows.append({
            "Chosen": CHOSEN_MARK if f.get("ref") == best and not is_parent else "",
            "Candidate": "parent (reference)" if is_parent else str(f.get("label") or f.get("recipe") or ""),
            "Version": str(f.get("ref") or ""),
            "Recipe": "" if is_parent else str(f.get("recipe") or ""),
            "Quality": num(f.get("quality")),
            "Drop": "" if is_parent else num(f.get("drop")),
            "Size": human_size(f.get("size_bytes")),
            "Latency ratio": num(f.get("latency_ratio"), 3),
            "95 % interval": f"{float(iv[0]):.3f} – {float(iv[1]):.3f}" if iv and len(iv) == 2 else "",
            "Within budget": "" if is_parent else yes(within),
            "Beats parent": "" if is_parent else yes(f.get("improves")),
            "Pareto": yes(f.get("pareto")),
            "Note": "",
        })
    for fail in result.get("failed") or []:
        rows.append({c: "" for c in COLUMNS} | {"Candidate": str(fail.get("label") or ""),
                                                "Recipe": str(fail.get("recipe") or ""),
                                                "Note": f"failed: {fail.get('error', '')}"})
    return rows


def summary_text(job: dict[str, Any]) -> str:
    r = job["result"]
    best = r.get("best") or "none within the budget"
    budget = r.get("max_drop")
    return (f"Job {job['id']}: {r.get('search', '')} — {r.get('stopped', '')}. Chosen: {best}. "
            f"Objective: {r.get('objective', '')}; quality: {r.get('quality_metric', '')} "
            f"({r.get('quality_source', '')}); budget: drop ≤ {budget}. "
            "Latency ratio = candidate ÷ parent p50, timed in the same job (below 1 is faster).")


class OptimizeResultsDialog(QDialog):
    def __init__(self, catalog: Any, parent: QWidget | None = None, *, job_id: int | None = None,
                 on_pick: Any = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Optimization candidates")
        self.setObjectName("optimize-results")
        self.resize(1100, 460)
        self.catalog = catalog
        self.on_pick = on_pick
        self.jobs = optimize_jobs(catalog)
        if not self.jobs:
            raise RelmanError("no optimization has finished in this catalog yet: select a version and use "
                              "Work → Optimize…")
        self.job_box = QComboBox()
        self.job_box.setObjectName("optimize-job")
        for j in self.jobs:
            r = j["result"]
            self.job_box.addItem(f"job {j['id']}: {r.get('parent', {}).get('ref', '?')} → {r.get('best') or 'none'}",
                                 j["id"])
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setObjectName("optimize-summary")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("optimize-candidates")
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.cellDoubleClicked.connect(self._pick)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        top = QHBoxLayout()
        top.addWidget(QLabel("Search"))
        top.addWidget(self.job_box, 1)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.summary)
        lay.addWidget(self.table, 1)
        lay.addWidget(buttons)
        self.job_box.currentIndexChanged.connect(lambda _i: self.show_job(self.job_box.currentData()))
        start = job_id if job_id is not None and any(j["id"] == job_id for j in self.jobs) else self.jobs[0]["id"]
        self.job_box.setCurrentIndex(self.job_box.findData(start))
        self.show_job(start)

    def show_job(self, job_id: int) -> None:
        job = next(j for j in self.jobs if j["id"] == job_id)
        self.summary.setText(summary_text(job))
        rows = candidate_rows(job["result"])
        self.table.setRowCount(len(rows))
        bold = QFont()
        bold.setBold(True)
        for r, row in enumerate(rows):
            for c, col in enumerate(COLUMNS):
                item = QTableWidgetItem(row[col])
                if col not in ("Candidate", "Version", "Recipe", "Note"):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                if row["Chosen"]:
                    item.setFont(bold)
                self.table.setItem(r, c, item)

    def cell(self, row: int, column: str) -> str:
        item = self.table.item(row, COLUMNS.index(column))
        return item.text() if item is not None else ""

    def _pick(self, row: int, _col: int) -> None:
        ref = self.cell(row, "Version")
        if ref and self.on_pick is not None:
            self.on_pick(ref)


def open_optimize_results(window: Any) -> OptimizeResultsDialog:
    """Work → Optimization candidates…: the search selected in the Jobs view, else the newest."""
    jobs_view = window.built_views().get("jobs")
    job_id = getattr(jobs_view, "selected_job", None)

    def pick(ref: str) -> None:
        v = next((v for v in window.snapshot.versions if v.ref == ref), None)
        if v is not None:
            window.set_selection([v.id])
    dialog = OptimizeResultsDialog(window.catalog, window, job_id=job_id, on_pick=pick)
    window.optimize_results = dialog
    dialog.open()  # not modal: the table can stay open beside the views
    return dialog
