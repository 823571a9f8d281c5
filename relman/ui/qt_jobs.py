"""Jobs panel: the queue with progress bars, status, device and elapsed time; cancel and retry;
the selected job's log tail and its live curves (e.g. distillation loss) from `job_points`.

Everything here reads the catalog (the only channel to the workers); nothing waits on a job.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pyqtgraph as pg
from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPalette, QPen
from PySide6.QtWidgets import (QAbstractItemView, QFrame, QHBoxLayout, QHeaderView, QLabel, QPlainTextEdit, QPushButton,
                               QSplitter, QStyledItemDelegate, QStyleOptionViewItem, QTableView, QVBoxLayout, QWidget)

from relman.catalog import Catalog
from relman.ui.qt_models import ID_ROLE, JobsTableModel

SERIES_COLORS = ("#3b6fd8", "#e07b39", "#2e9d57", "#c4453b", "#8e5bd8")
MAX_JOBS = 500


class ProgressDelegate(QStyledItemDelegate):
    """A progress bar drawn from the palette (the style's own bar drew a white box with the
    percentage cut off under the dark style sheet): a track, the filled part in the
    highlight colour, the percentage centred over both in the text colour."""

    def paint(self, painter: Any, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> None:
        job = index.model().jobs[index.row()]  # type: ignore[attr-defined]
        share = max(0.0, min(1.0, float(job["progress"] or 0)))
        pal = option.palette  # type: ignore[attr-defined]
        rect = option.rect.adjusted(3, 4, -3, -4)  # type: ignore[attr-defined]
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(pal.color(QPalette.ColorRole.Mid), 1))
        painter.setBrush(pal.color(QPalette.ColorRole.Base))
        painter.drawRoundedRect(rect, 3, 3)
        if share > 0:
            fill = rect.adjusted(1, 1, -1, -1)
            fill.setWidth(max(2, int(fill.width() * share)))
            painter.setPen(Qt.PenStyle.NoPen)
            color = QColor(pal.color(QPalette.ColorRole.Highlight))
            color.setAlpha(150)
            painter.setBrush(color)
            painter.drawRoundedRect(fill, 2, 2)
        painter.setPen(pal.color(QPalette.ColorRole.Text))
        painter.drawText(rect, int(Qt.AlignmentFlag.AlignCenter), f"{100 * share:.0f}%")
        painter.restore()


def read_jobs(catalog: Catalog, limit: int = MAX_JOBS) -> list[dict[str, Any]]:
    rows = catalog.query(f"SELECT * FROM jobs ORDER BY id DESC LIMIT {int(limit)}")
    ids: set[int] = set()
    for r in rows:
        try:
            r["params_obj"] = json.loads(r["params"] or "{}")
        except ValueError:
            r["params_obj"] = {}
        ids.update(_version_ids(r["params_obj"]))
        if r.get("result_version_id"):
            ids.add(r["result_version_id"])
    refs = _refs(catalog, ids)
    for r in rows:
        p = r["params_obj"]
        target = ", ".join(refs.get(i, f"#{i}") for i in _version_ids(p))
        if p.get("recipe"):
            target = f"{p['recipe']} ← {target}" if target else str(p["recipe"])
        if p.get("to_phase"):  # a promotion
            target += f" → {p['to_phase']}"
        elif p.get("out"):  # a bundle export
            target += f" → {Path(str(p['out'])).name}"
        elif p.get("path"):  # file work: an import, a dataset, a bundle import
            target = Path(str(p["path"])).name + (f" as {p['model']}" if p.get("model") else "") + \
                (f" as dataset {p['name']}" if p.get("name") else "")
        if r.get("result_version_id") in refs:
            target += f" → {refs[r['result_version_id']]}"
        r["target"] = target
    return rows


def _version_ids(params: dict[str, Any]) -> list[int]:
    out: list[int] = []
    for key in ("version_id", "parent_version_id", "parent_version_ids", "version_ids"):
        value = params.get(key)
        if isinstance(value, int):
            out.append(value)
        elif isinstance(value, list):
            out.extend(v for v in value if isinstance(v, int))
    return out


def _refs(catalog: Catalog, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    return {r[0]: f"{r[1]}@{r[2]}" for r in catalog.conn.execute(
        f"SELECT v.id, m.name, v.version FROM versions v JOIN models m ON m.id = v.model_id WHERE v.id IN ({marks})",
        sorted(ids))}


def tail_file(path: str | None, max_bytes: int = 8192) -> str:
    """The end of a log file, read without loading the whole file."""
    if not path:
        return ""
    p = Path(path)
    try:
        size = p.stat().st_size
        with p.open("rb") as f:
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return text if size <= max_bytes else text.split("\n", 1)[-1]


def retry_offered(job: dict[str, Any] | None) -> bool:
    """Retry where running the job again can succeed: a cancelled job, or one that failed for a
    cause outside its input (a killed worker, memory, a lost node, a timeout, a full disk)."""
    from relman.jobs.causes import retry_helps

    return job is not None and (job["status"] == "cancelled"
                                or (job["status"] == "failed" and retry_helps(job.get("cause"))))


def retry_tip(job: dict[str, Any] | None) -> str:
    """Why Retry is (not) offered for `job`, in words."""
    from relman.jobs.causes import describe

    if job is None:
        return "Select a failed or cancelled job to queue it again"
    if job["status"] == "failed" and not retry_offered(job):
        return (f"Retrying cannot help: the job failed on {describe(job.get('cause'))}, so the same input fails "
                "the same way — fix what it was given and start it again")
    if job["status"] == "failed":
        why = f" ({describe(job.get('cause'))}: the cause lay outside the job's input)" if job.get("cause") else ""
        return f"Queue the job again as a new attempt{why}"
    if job["status"] == "cancelled":
        return "Queue the cancelled job again as a new attempt"
    return f"Only a failed or cancelled job can be retried (this one is {job['status']})"


def traceback_of(log: str) -> str:
    """The last Python traceback in a job's log (what the worker printed when the job raised),
    or '' when the log has none (a killed worker raises nothing)."""
    at = log.rfind("Traceback (most recent call last):")
    return log[at:].rstrip() if at >= 0 else ""


class FailurePanel(QFrame):
    """The selected failed job's one-line error, inline above the jobs table (a failure is no
    box to dismiss), with its cause; "Details" shows the traceback from the job's log."""

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("job-failure")
        self.text = QLabel("")
        self.text.setObjectName("job-failure-text")
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.text.setStyleSheet("color: #c4453b; font-weight: bold;")
        self.details_btn = QPushButton("Details")
        self.details_btn.setObjectName("job-failure-details-button")
        self.details_btn.setCheckable(True)
        self.details_btn.setToolTip("Show the traceback from the job's log")
        self.details = QPlainTextEdit()
        self.details.setObjectName("job-failure-details")
        self.details.setReadOnly(True)
        self.details.setMaximumHeight(180)
        self.details.hide()
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.text, 1)
        row.addWidget(self.details_btn)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 2, 0, 2)
        layout.addLayout(row)
        layout.addWidget(self.details)
        self.details_btn.toggled.connect(self._toggle)
        self.job_id: int | None = None
        self._read_log: Callable[[], str] = lambda: ""
        self.hide()

    def show_job(self, job: dict[str, Any] | None, read_log: Callable[[], str]) -> None:
        """Show `job`'s failure (hide the panel for any other job); `read_log` reads its log
        when the details are open."""
        from relman.jobs.causes import describe

        if job is None or job["status"] != "failed":
            self.job_id = None
            self.hide()
            return
        if job["id"] != self.job_id:
            self.details_btn.setChecked(False)
        self.job_id = job["id"]
        self._read_log = read_log
        cause = describe(job.get("cause"))
        text = f"✗ Job {job['id']} failed" + (f" ({cause})" if cause else "") + f": {job.get('error') or 'see its log'}"
        if text != self.text.text():
            self.text.setText(text)
        self.show()
        if self.details_btn.isChecked():
            self._fill_details()

    def _toggle(self, on: bool) -> None:
        self.details_btn.setText("Hide details" if on else "Details")
        self.details.setVisible(on)
        if on:
            self._fill_details()

    def _fill_details(self) -> None:
        log = self._read_log()
        text = traceback_of(log) or ("No traceback in the job's log (the worker did not raise: it was stopped or "
                                     "died). The end of the log:\n" + "\n".join(log.splitlines()[-20:]))
        if text != self.details.toPlainText():
            self.details.setPlainText(text)


class JobsView(QWidget):
    name = "jobs"
    title = "Jobs"
    cancel_requested = Signal(int)
    retry_requested = Signal(int)

    def __init__(self, window: Any = None) -> None:
        super().__init__()
        self.model = JobsTableModel(self)
        self.table = QTableView()
        self.table.setObjectName("jobs-table")
        self.table.setModel(self.model)
        self.table.setItemDelegateForColumn(JobsTableModel.PROGRESS_COLUMN, ProgressDelegate(self.table))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        for c, width in enumerate((50, 80, 280, 80, 100, 70, 70, 130)):
            self.table.horizontalHeader().resizeSection(c, width)
        self.table.setAlternatingRowColors(True)
        self.cancel_btn = QPushButton("Cancel job")
        self.retry_btn = QPushButton("Retry job")
        self.summary = QLabel("")
        self.summary.setObjectName("hint")
        self.failure = FailurePanel()
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setObjectName("job-log")
        self.log.setPlaceholderText("Select a job to see the end of its log.")
        self.curve_plot = pg.PlotWidget(title="Live curves (job_points)")
        self.curve_plot.showGrid(x=True, y=True, alpha=0.25)
        self.curve_plot.addLegend()
        self.curve_plot.setLabel("bottom", "step")
        self.curves: dict[str, pg.PlotDataItem] = {}
        self._drawn: dict[str, tuple[int, int, int]] = {}  # series -> (job, attempt, points) drawn
        self.drawn_attempt = 0
        self._title = ""
        self.catalog: Catalog | None = None
        self.selected_job: int | None = None
        self.window = window

        bar = QHBoxLayout()
        bar.addWidget(self.summary, 1)
        bar.addWidget(self.cancel_btn)
        bar.addWidget(self.retry_btn)
        lower = QSplitter(Qt.Orientation.Horizontal)
        lower.addWidget(self.log)
        lower.addWidget(self.curve_plot)
        split = QSplitter(Qt.Orientation.Vertical)
        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addLayout(bar)
        tl.addWidget(self.failure)
        tl.addWidget(self.table, 1)
        split.addWidget(top)
        split.addWidget(lower)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([600, 400])  # the job list keeps most of a short (700 px) window
        layout = QVBoxLayout(self)
        layout.addWidget(split)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._on_select())
        self.cancel_btn.clicked.connect(lambda: self.selected_job is not None and self.cancel_requested.emit(self.selected_job))
        self.retry_btn.clicked.connect(lambda: self.selected_job is not None and self.retry_requested.emit(self.selected_job))
        self._update_buttons()
        if window is not None:
            self.cancel_requested.connect(window.job_actions.cancel_job)
            self.retry_requested.connect(window.job_actions.retry_job)

    # -- the view protocol --------------------------------------------------------------------
    def refresh(self, state: Any) -> None:
        self.on_jobs(state.catalog)

    def apply_theme(self, dark: bool) -> None:
        self.set_theme(dark)

    def on_jobs(self, catalog: Catalog) -> None:
        """Re-read the jobs table (called whenever it changed, shown or not)."""
        self.catalog = catalog
        jobs = read_jobs(catalog)
        keep = self.selected_job
        actions = getattr(self.window, "job_actions", None)
        focus = getattr(actions, "focus_job", None)
        if focus is not None and any(j["id"] == focus for j in jobs):
            keep = focus  # a job the window just queued: select it and scroll it into view
            actions.focus_job = None
        self.model.set_jobs(jobs)
        counts: dict[str, int] = {}
        for j in jobs:
            counts[j["status"]] = counts.get(j["status"], 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "No jobs yet."
        where = getattr(getattr(self.window, "job_actions", None), "executor_text", "")
        if where and where != "local worker processes":
            summary += f" · new jobs run on {where} (Jobs › Where jobs run)"
        who = getattr(actions, "where_jobs_run", None)
        if who is not None:
            summary += f"\n{who()}"
        if summary != self.summary.text():
            self.summary.setText(summary)
        if keep is not None:
            self.select_job(keep)
        elif jobs:
            self.select_job(jobs[0]["id"])
        self._update_details()

    def select_job(self, job_id: int) -> None:
        for row, j in enumerate(self.model.jobs):
            if j["id"] == job_id:
                rows = self.table.selectionModel().selectedRows()
                if not (len(rows) == 1 and rows[0].row() == row):
                    self.table.selectRow(row)
                    self.table.scrollTo(self.model.index(row, 0))
                self.selected_job = job_id
                return

    def job(self, job_id: int) -> dict[str, Any] | None:
        return next((j for j in self.model.jobs if j["id"] == job_id), None)

    def _on_select(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        self.selected_job = rows[0].data(ID_ROLE) if rows else None
        self._update_details()

    def _update_details(self) -> None:
        self._update_buttons()
        j = self.job(self.selected_job) if self.selected_job is not None else None
        if j is None or self.catalog is None:
            self.failure.show_job(None, lambda: "")
            return
        text = self._log_tail(j)
        if j.get("error"):
            text += f"\n[error] {j['error']}"
        if text != self.log.toPlainText():
            self.log.setPlainText(text)
            self.log.verticalScrollBar().setValue(self.log.verticalScrollBar().maximum())
        self.failure.show_job(j, lambda: self._log_tail(j, lines=400))
        # Only the current attempt's curves: a retried job starts them again, and joining the
        # attempts drew one line that jumped back to step 0. A job queued again has not begun
        # its next attempt yet: nothing to draw. Points from before m010 have no attempt.
        attempt = int(j.get("attempts") or 0) + (1 if j["status"] == "queued" else 0)
        series: dict[str, tuple[list[float], list[float]]] = {}
        for name, step, value in self.catalog.conn.execute(
                "SELECT series, step, value FROM job_points WHERE job_id = ? AND (attempt = ? OR attempt IS NULL)"
                " ORDER BY rowid", [j["id"], attempt]):
            xs, ys = series.setdefault(name, ([], []))
            xs.append(step)
            ys.append(value)
        for name in list(self.curves):
            if name not in series and name in self._drawn:
                self.curves[name].setData([], [])
                del self._drawn[name]
        for name, (xs, ys) in series.items():
            curve = self.curves.get(name)
            if curve is None:
                color = SERIES_COLORS[len(self.curves) % len(SERIES_COLORS)]
                curve = self.curve_plot.plot([], [], pen=pg.mkPen(color, width=2), name=name)
                self.curves[name] = curve
            if self._drawn.get(name) != (j["id"], attempt, len(xs)):  # redraw only when points arrived
                curve.setData(xs, ys)
                self._drawn[name] = (j["id"], attempt, len(xs))
        self.drawn_attempt = attempt
        title = f"Job {j['id']} ({j['kind']})"
        if attempt > 1:
            title += f", attempt {attempt} (earlier attempts not drawn)"
        title += ": " + (", ".join(series) if series else "no curve points")
        if title != self._title:
            self._title = title
            self.curve_plot.setTitle(title)

    def _log_tail(self, job: dict[str, Any], lines: int = 60) -> str:
        """The last `lines` lines of the job's log, reading only its end (a training log can
        be large, and this runs on every poll while the job is selected)."""
        from relman.jobs.queue import log_path_for

        path = job.get("log_path") or (str(log_path_for(self.catalog, job["id"])) if self.catalog else None)
        text = tail_file(path, max_bytes=32 * 1024)
        return "\n".join(text.rstrip("\n").split("\n")[-lines:]) if text else ""

    def _update_buttons(self) -> None:
        j = self.job(self.selected_job) if self.selected_job is not None else None
        self.cancel_btn.setEnabled(j is not None and j["status"] in ("queued", "running")
                                   and not j["cancel_requested"])
        self.retry_btn.setEnabled(retry_offered(j))
        self.retry_btn.setToolTip(retry_tip(j))
        self.cancel_btn.setToolTip("Ask the selected job to stop")

    def set_theme(self, dark: bool) -> None:
        self.curve_plot.setBackground("#252932" if dark else "#ffffff")
