"""Qt item models over the snapshot: the versions table (sortable, filterable) and jobs.

Why the sort lives in the source model: `QSortFilterProxyModel` would call back into Python
for every comparison (~10^5 calls for 10,000 rows); sorting the row list once with a key is
two orders of magnitude faster. The proxy only filters, on a lower-case text prepared per row.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QBrush, QColor

from relman.ui.snapshot import Snapshot, VersionRow
from relman.units import human_size

SORT_ROLE = int(Qt.ItemDataRole.UserRole) + 1
ID_ROLE = int(Qt.ItemDataRole.UserRole) + 2
# Plain ints: views ask data() for ~10 roles per visible cell on every paint, so the common
# "not a role we serve" answer must be one set lookup, with no enum work.
DISPLAY = int(Qt.ItemDataRole.DisplayRole)
FOREGROUND = int(Qt.ItemDataRole.ForegroundRole)
ALIGNMENT = int(Qt.ItemDataRole.TextAlignmentRole)
TOOLTIP = int(Qt.ItemDataRole.ToolTipRole)
VERSION_ROLES = frozenset({DISPLAY, SORT_ROLE, ID_ROLE, FOREGROUND, ALIGNMENT, TOOLTIP})
RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

PHASE_COLORS = {
    "draft": "#8a94a6", "candidate": "#d99a1e", "staging": "#3b82c4", "production": "#2e9d57",
    "retired": "#6b6f78", "rejected": "#c4453b",
}


def fmt_metric(value: float | None) -> str:
    if value is None:
        return ""
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3g}"
    return f"{value:.4g}"


def fmt_count(n: int | None) -> str:
    if n is None:
        return ""
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 1_000:
        return f"{n / 1e3:.1f}k"
    return str(n)


Column = tuple[str, Callable[[VersionRow], Any], Callable[[VersionRow], str]]


class VersionsTableModel(QAbstractTableModel):
    """One row per version; columns: identity, phase, size, params, recipe, created, key metrics.

    Sorting and filtering happen here, on the Python list, in one pass each (a model reset);
    the proxy in front only forwards requests. Asking Python row by row from C++ (what a
    proxy's filterAcceptsRow / lessThan do) costs more than the work itself at 10,000 rows."""

    BASE_COLUMNS: list[Column] = [
        ("Model", lambda v: v.model, lambda v: v.model),
        ("Version", lambda v: v.id, lambda v: v.version),  # id order = semver order within a model
        ("Phase", lambda v: v.phase, lambda v: v.phase + (f" ({v.canary_share:g}%)" if v.canary_share else "")),
        ("Format", lambda v: v.format, lambda v: v.format),
        ("Size", lambda v: v.size_bytes, lambda v: human_size(v.size_bytes)),
        ("Params", lambda v: v.params or 0, lambda v: fmt_count(v.params)),
        ("Recipe", lambda v: v.recipe_name, lambda v: v.recipe_name),
        ("Tags", lambda v: " ".join(v.tags), lambda v: " ".join(v.tags)),
        ("Created", lambda v: v.created_at, lambda v: v.created_at[:16].replace("T", " ")),
    ]

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.rows: list[VersionRow] = []  # visible rows, in display order
        self.all_rows: list[VersionRow] = []
        self.filter_text = ""
        self.filter_raw = ""
        self.filter_error = ""
        self.filter_phase = ""
        self.filter_model = ""
        self.metric_columns: list[str] = []
        self.columns: list[Column] = list(self.BASE_COLUMNS)
        self._sort: tuple[int, Qt.SortOrder] | None = None
        self.haystacks: dict[int, str] = {}
        self.generation = 0  # bumped whenever row order or content changes (see the proxy)

    # -- data -------------------------------------------------------------------------------
    def set_snapshot(self, snap: Snapshot, n_metrics: int = 5) -> None:
        self.beginResetModel()
        self.all_rows = list(snap.versions)
        self.metric_columns = snap.key_metrics(n_metrics)
        self.columns = list(self.BASE_COLUMNS) + [self._metric_column(m) for m in self.metric_columns]
        if self._sort is not None and self._sort[0] < len(self.columns):
            self._apply_sort(*self._sort)
        self._rebuild_haystacks()
        self._apply_filter()
        self.generation += 1
        self.endResetModel()

    @property
    def total_rows(self) -> int:
        return len(self.all_rows)

    def set_filter(self, text: str | None = None, phase: str | None = None, model: str | None = None) -> None:
        self.beginResetModel()
        if text is not None:
            self.filter_text = text.strip().lower()
            self.filter_raw = text.strip()
        if phase is not None:
            self.filter_phase = phase
        if model is not None:
            self.filter_model = model
        self._apply_filter()
        self.generation += 1
        self.endResetModel()

    def _apply_filter(self) -> None:
        from relman.ui.search_filter import row_matcher

        words, phase, model, hay = self.filter_text.split(), self.filter_phase, self.filter_model, self.haystacks
        if not (words or phase or model):
            self.rows = list(self.all_rows)
            self.filter_error = ""
            return
        names = {n for v in self.all_rows for n in v.metrics} if any(c in self.filter_raw for c in "<>=") else ()
        match, self.filter_error = row_matcher(self.filter_raw, hay, names)
        self.rows = [v for v in self.all_rows if (not phase or v.phase == phase) and (not model or v.model == model)
                     and match(v)]

    @staticmethod
    def _metric_column(name: str) -> Column:
        return (name, lambda v: v.metrics.get(name, float("-inf")), lambda v: fmt_metric(v.metrics.get(name)))

    def _rebuild_haystacks(self) -> None:
        self.haystacks = {v.id: f"{v.model}@{v.version} {v.phase} {v.format} {v.recipe_name} {v.task or ''} "
                                f"{' '.join(getattr(v, 'tags', []))}".lower() for v in self.all_rows}

    def row_of(self, version_id: int) -> int:
        for i, v in enumerate(self.rows):
            if v.id == version_id:
                return i
        return -1

    # -- Qt model API -----------------------------------------------------------------------
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.columns)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.columns[section][0]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = DISPLAY) -> Any:
        if role not in VERSION_ROLES:
            return None
        v = self.rows[index.row()]
        c = index.column()
        col = self.columns[c]
        if role == DISPLAY:
            return col[2](v)
        if role == SORT_ROLE:
            return col[1](v)
        if role == ID_ROLE:
            return v.id
        if role == FOREGROUND:
            return _phase_brush(v.phase) if c == 2 else None
        if role == ALIGNMENT:
            return RIGHT if c >= 4 and c not in (6, 7) else None
        return version_tooltip(v)

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        if not 0 <= column < len(self.columns):
            return
        self.beginResetModel()
        self._apply_sort(column, order)
        self._apply_filter()
        self.generation += 1
        self.endResetModel()

    def _apply_sort(self, column: int, order: Qt.SortOrder) -> None:
        self._sort = (column, order)
        key = self.columns[column][1]
        if self.columns[column][0] == "Version":
            from relman.ui.snapshot import _semver_key

            key = lambda v: (v.model, _semver_key(v.version))  # noqa: E731
        self.all_rows.sort(key=lambda v: _none_safe(key(v)), reverse=order == Qt.SortOrder.DescendingOrder)


def version_tooltip(v: VersionRow) -> str:
    """The row's details: identity, an adapter's base, the privacy ledger."""
    lines = [f"{v.ref} · {v.phase} · {v.task or 'task?'}"]
    if v.adapter_base:
        lines.append(f"LoRA adapter of {v.adapter_base} (pinned by manifest sha256)")
    p = v.privacy
    if p:
        if p.get("epsilon") is None:
            lines.append("privacy: no DP bound (mixed DP / non-DP parents)")
        else:
            lines.append(f"privacy: ε = {float(p['epsilon']):.3g}, δ = {float(p['delta']):.2g} ({p.get('accountant')})")
            if p.get("noise_multiplier") is not None:
                lines.append(f"  noise σ = {float(p['noise_multiplier']):.3g}, sampling q = {float(p['sample_rate']):.3g}, "
                             f"{p.get('steps')} steps, clip C = {p.get('max_grad_norm')}")
            for site in p.get("sites") or []:
                lines.append(f"  site {site['parent']}: ε = {float(site['epsilon']):.3g}")
    return "\n".join(lines)


_BRUSHES: dict[str, QBrush] = {}


def _phase_brush(phase: str) -> QBrush:
    brush = _BRUSHES.get(phase)
    if brush is None:
        brush = _BRUSHES[phase] = QBrush(QColor(PHASE_COLORS.get(phase, "#888888")))
    return brush


def _none_safe(value: Any) -> Any:
    return (0, value) if value is not None else (1, 0)


class VersionsFilterProxy(QSortFilterProxyModel):
    """The table's proxy: filter (free text over model@version, phase, format, recipe and
    task; a phase; a model) and sort requests are forwarded to the source model, which does
    each in one Python pass (see VersionsTableModel); the proxy itself maps 1:1 in C++."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setDynamicSortFilter(False)

    def set_filter(self, text: str | None = None, phase: str | None = None, model: str | None = None) -> None:
        self.sourceModel().set_filter(text=text, phase=phase, model=model)  # type: ignore[attr-defined]

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self.sourceModel().sort(column, order)

    def version_id(self, proxy_row: int) -> int:
        return self.mapToSource(self.index(proxy_row, 0)).data(ID_ROLE)


# -- jobs --------------------------------------------------------------------------------------
JOB_COLUMNS = ("ID", "Kind", "Target", "Status", "Progress", "Device", "Elapsed", "Executor", "Cause", "Message")
STATUS_COLORS = {"queued": "#8a94a6", "running": "#3b82c4", "succeeded": "#2e9d57", "failed": "#c4453b",
                 "cancelled": "#b07a1e"}


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def elapsed_text(started: str | None, finished: str | None, now: datetime | None = None) -> str:
    t0 = parse_time(started)
    if t0 is None:
        return ""
    t1 = parse_time(finished) or now or datetime.now(timezone.utc)
    s = max(0, int((t1 - t0).total_seconds()))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def job_cause_text(job: dict[str, Any]) -> str:
    """The typed cause of a failed job in words ("out of memory", "bad input"), '' otherwise."""
    if job.get("status") != "failed" or not job.get("cause"):
        return ""
    from relman.jobs.causes import describe

    return describe(job["cause"])


def job_target(params: dict[str, Any]) -> str:
    for key in ("ref", "version", "parent", "refs", "parents", "model"):
        value = params.get(key)
        if value:
            return ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return ""


class JobsTableModel(QAbstractTableModel):
    PROGRESS_COLUMN = 4

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.jobs: list[dict[str, Any]] = []

    def set_jobs(self, jobs: list[dict[str, Any]]) -> None:
        """Same jobs as before (the usual poll): update in place and repaint only the rows
        that changed, plus the elapsed-time cells of running jobs; otherwise reset."""
        if [j["id"] for j in jobs] != [j["id"] for j in self.jobs]:
            self.beginResetModel()
            self.jobs = jobs
            self.endResetModel()
            return
        old, self.jobs = self.jobs, jobs
        last = len(JOB_COLUMNS) - 1
        for row, (a, b) in enumerate(zip(old, jobs)):
            if a != b:
                self.dataChanged.emit(self.index(row, 0), self.index(row, last))
            elif b["status"] == "running":
                self.dataChanged.emit(self.index(row, 6), self.index(row, 6))

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.jobs)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(JOB_COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return JOB_COLUMNS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        j = self.jobs[index.row()]
        c = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return [
                str(j["id"]), j["kind"], j.get("target") or job_target(j.get("params_obj", {})), j["status"],
                f"{100 * (j['progress'] or 0):.0f}%", j.get("device_used") or j["device"],
                elapsed_text(j["started_at"], j["finished_at"]), j.get("executor") or "",
                job_cause_text(j), j.get("error") or j["message"],
            ][c]
        if role == SORT_ROLE and c == self.PROGRESS_COLUMN:
            return float(j["progress"] or 0)
        if role == ID_ROLE:
            return j["id"]
        if role == Qt.ItemDataRole.ForegroundRole and c == 3:
            return QBrush(QColor(STATUS_COLORS.get(j["status"], "#888888")))
        if role == Qt.ItemDataRole.ToolTipRole:
            if c == 7:
                return ("Ran on the Ray worker " + j["executor"][4:]) if (j.get("executor") or "").startswith("ray") \
                    else "Ran as a local worker process" if j.get("executor") else "Not started yet"
            if c == 8 and j.get("cause"):
                return f"{job_cause_text(j)}: {j.get('cause_evidence') or 'no further evidence'}"
            return j.get("error") or j["message"] or None
        return None
