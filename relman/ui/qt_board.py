"""The release board: one column per phase, a card per version; drag a card to another
column (or use the buttons) to ask for a transition.

The board never changes phases itself: a drop or a button emits `transition_requested`, and
the main window runs the promotion dialog and the release API; the board is then redrawn from
the catalog. So a refused promotion can never leave a card in the wrong column.
"""

from __future__ import annotations

from typing import Any, Callable

from PySide6.QtCore import QByteArray, QMimeData, QSize, Qt, Signal
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFrame, QHBoxLayout, QLabel, QListWidget,
                               QListWidgetItem, QPushButton, QVBoxLayout, QWidget)

from relman.ui.qt_models import PHASE_COLORS, fmt_metric
from relman.units import human_size
from relman.ui.snapshot import BOARD_PHASES, Snapshot, VersionRow

MIME = "application/x-relman-version"
NEXT_PHASE = {"draft": "candidate", "candidate": "staging", "staging": "production"}
BADGE_COLORS = {"pass": "#2e9d57", "fail": "#c4453b", "unknown": "#8a94a6", "none": "#6b6f78",
                "skipped": "#b07d12"}  # amber: every rule skipped, nothing checked (not a pass)
# A board is for deciding on a few versions: each column shows its newest cards, and the gate
# badge (a release-API evaluation, which reads the model's versions) is computed for the
# newest few cards up front and for any other card when it is selected.
MAX_CARDS_PER_COLUMN = 60
GATES_UP_FRONT = 12
UNCHECKED: "GateStatus" = ("unknown", "gates: select to check")

GateStatus = tuple[str, str]  # ("pass" | "fail" | "unknown" | "none", short text)


def is_absolute_latency(metric: str) -> bool:
    """latency_p95_ms, latency_p50_ms@b8…: a time of one run (not a paired ratio)."""
    return metric.startswith("latency_") and "_ms" in metric and "ratio" not in metric


def latency_line(v: VersionRow) -> str:
    """The paired latency ratio with its 95 % interval: vs production (measured or chained),
    else vs the parent; '' when no paired figure is stored."""
    from relman.ui.paired_latency import RATIO_KEY

    for key, against in ((RATIO_KEY, "production"), ("latency_p50_ratio_vs_parent", "parent")):
        value = v.value(key)
        if value is None:
            continue
        if key == RATIO_KEY and v.phase == "production" and "itself" in v.how(key):
            return "latency: the production reference (×1)"
        iv = v.interval(key)
        text = f"latency ×{value:.2f} vs {against}"
        if iv is not None:
            text += f" [{iv[0]:.2f}–{iv[1]:.2f}]"
        if v.chained(key):
            text += " (chained)"
        return text
    return ""


def absolute_latency_line(v: VersionRow, metric: str) -> str:
    """'latency p95 3.1 ms (b1 s128, perf_counter, load 1.9)'."""
    name = metric.replace("latency_", "latency ").replace("_ms", "")
    cond = v.conditions(metric)
    return f"{name} {fmt_metric(v.metrics[metric])} ms" + (f" ({cond})" if cond else " (conditions not recorded)")


class Card(QFrame):
    """A version on the board: name, key metrics, the gate badge toward its next phase."""

    def __init__(self, v: VersionRow, metrics: list[str], gate: GateStatus, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.version_id = v.id
        self.setObjectName("card")
        self.setProperty("production", v.phase == "production")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        layout.setSpacing(2)
        title = QLabel(f"<b>{v.model}</b> {v.version}")
        title.setWordWrap(True)  # a narrow column (a laptop screen) wraps instead of cutting
        layout.addWidget(title)
        sub = [human_size(v.size_bytes)]
        if v.recipe_name:
            sub.append(v.recipe_name)
        if v.canary_share:
            sub.append(f"canary {v.canary_share:g}%")
        info = QLabel(" · ".join(sub))
        info.setObjectName("hint")
        info.setWordWrap(True)
        layout.addWidget(info)
        # "_\u200b": a metric name may break after its underscores in a narrow column
        shown = [m for m in metrics if m in v.metrics and not is_absolute_latency(m)]
        lines = [f"{m.replace('_', '_' + chr(0x200B))}: {fmt_metric(v.metrics[m])}" for m in shown]
        speed = latency_line(v)
        if speed:
            lines.append(speed)
        self.metrics_label = QLabel("\n".join(lines) if lines else "no metrics yet")
        self.metrics_label.setWordWrap(True)
        layout.addWidget(self.metrics_label)
        # absolute times only with their conditions, smaller: they are of one run on one machine
        absolute = [absolute_latency_line(v, m) for m in metrics if m in v.metrics and is_absolute_latency(m)]
        self.absolute_label = QLabel("\n".join(absolute))
        self.absolute_label.setObjectName("hint")
        self.absolute_label.setWordWrap(True)
        self.absolute_label.setVisible(bool(absolute))
        self.absolute_label.setToolTip("Absolute latency of this version's own run, under the conditions shown; "
                                       "not comparable across versions timed at different moments. "
                                       "The paired ratio above is.")
        layout.addWidget(self.absolute_label)
        self.badge = QLabel()
        self.badge.setObjectName("badge")
        self.badge.setWordWrap(True)
        self.badge.setAlignment(Qt.AlignmentFlag.AlignLeft)
        self.set_gate(gate)
        row = QHBoxLayout()
        row.addWidget(self.badge)
        row.addStretch(1)
        layout.addLayout(row)


    def set_gate(self, gate: GateStatus) -> None:
        state, text = gate
        self.gate_state = state
        self.gate_checked = gate != UNCHECKED
        self.badge.setText(text)
        self.badge.setStyleSheet(f"background: {BADGE_COLORS.get(state, '#888')}; color: white; "
                                 "border-radius: 4px; padding: 1px 6px;")


class PhaseColumn(QListWidget):
    """A drop target for cards; dropping asks for a transition to this column's phase."""

    dropped = Signal(int, str)  # version id, target phase

    def __init__(self, phase: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.phase = phase
        self.setObjectName(f"column-{phase}")
        self.setDragEnabled(True)
        self.setAcceptDrops(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DragDrop)
        self.setDefaultDropAction(Qt.DropAction.MoveAction)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setSpacing(4)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

    def fit_cards(self) -> None:
        """Cards take the column's width (their text wraps), so nothing is cut off."""
        width = max(80, self.viewport().width() - 2 * self.spacing() - 2)
        for i in range(self.count()):
            item = self.item(i)
            card = self.itemWidget(item)
            if isinstance(card, Card):
                card.setFixedWidth(width)
                card.adjustSize()
                item.setSizeHint(QSize(width, card.heightForWidth(width) if card.hasHeightForWidth()
                                       else card.sizeHint().height()))

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self.fit_cards()

    def mimeTypes(self) -> list[str]:
        return [MIME]

    def mimeData(self, items: Any) -> QMimeData:
        mime = QMimeData()
        if items:
            mime.setData(MIME, QByteArray(str(items[0].data(Qt.ItemDataRole.UserRole)).encode()))
        return mime

    def dragEnterEvent(self, event: Any) -> None:
        if event.mimeData().hasFormat(MIME):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event: Any) -> None:
        if event.mimeData().hasFormat(MIME):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        mime = event.mimeData()
        if not mime.hasFormat(MIME):
            event.ignore()
            return
        version_id = int(bytes(mime.data(MIME).data()).decode())
        # Accept as a copy so Qt does not remove the source item; the board redraws itself
        # from the catalog once the transition has (or has not) happened.
        event.setDropAction(Qt.DropAction.CopyAction)
        event.accept()
        self.dropped.emit(version_id, self.phase)


class ReleaseBoard(QWidget):
    name = "board"
    title = "Release board"
    transition_requested = Signal(int, str)  # version id, target phase
    rollback_requested = Signal(str)  # model
    rollout_requested = Signal(int)  # version id (canary share)
    approve_requested = Signal(int)  # version id
    selection_changed = Signal(list)

    def __init__(self, window: Any = None, gate_status: Callable[[VersionRow], GateStatus] | None = None) -> None:
        super().__init__()
        self.gate_status = gate_status or window.release.gate_status
        self.gate_tip: Callable[[VersionRow], str] = getattr(getattr(window, "release", None), "gate_tip",
                                                             lambda v: "")
        self.model_combo = QComboBox()
        self.model_combo.setObjectName("board-model")
        self.promote_btn = QPushButton("Promote →")
        self.reject_btn = QPushButton("Reject")
        self.approve_btn = QPushButton("Approve…")
        self.rollout_btn = QPushButton("Canary…")
        self.rollback_btn = QPushButton("Roll back")
        # short labels (a laptop screen), tooltips that say what each does
        self.promote_btn.setToolTip("Move the selected version to its next phase; the gates are checked first "
                                    "and the dialog shows every rule")
        self.reject_btn.setToolTip("Mark the selected version rejected (with a reason); it can no longer be promoted")
        self.approve_btn.setToolTip("Record your approval of the selected version for its next phase "
                                    "(policies can require approvals)")
        self.rollout_btn.setToolTip("Set the share of traffic the staging version serves as a canary "
                                    "(100% makes it ready for production)")
        self.rollback_btn.setToolTip("Roll back production: the previous production version of this model "
                                     "serves again")
        self.columns: dict[str, PhaseColumn] = {}
        self.snapshot: Snapshot | None = None
        self.key_metrics: list[str] = []
        self.hidden_cards: dict[str, int] = {}
        self._syncing = False  # following the shared selection: do not echo it back

        bar = QHBoxLayout()
        bar.addWidget(QLabel("Model"))
        bar.addWidget(self.model_combo)
        hint = QLabel("Drag a card to another column, or select it and use the buttons.")
        hint.setObjectName("hint")
        hint.setWordWrap(True)
        bar.addStretch(1)
        for b in (self.promote_btn, self.reject_btn, self.approve_btn, self.rollout_btn, self.rollback_btn):
            bar.addWidget(b)
        cols = QHBoxLayout()
        for phase in BOARD_PHASES + ("rejected",):
            box = QVBoxLayout()
            title = QLabel(phase.capitalize())
            title.setObjectName("columnTitle")
            title.setStyleSheet(f"border-bottom: 3px solid {PHASE_COLORS[phase]};")
            box.addWidget(title)
            col = PhaseColumn(phase)
            col.dropped.connect(self.transition_requested)
            col.itemSelectionChanged.connect(lambda c=col: self._on_select(c))
            box.addWidget(col, 1)
            self.columns[phase] = col
            cols.addLayout(box, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(hint)  # its own line: never widens the button row
        layout.addLayout(cols, 1)

        self.model_combo.currentTextChanged.connect(lambda _: self._fill())
        self.promote_btn.clicked.connect(self._promote_selected)
        self.reject_btn.clicked.connect(lambda: self._emit_for_selected(lambda v: self.transition_requested.emit(v.id, "rejected")))
        self.approve_btn.clicked.connect(lambda: self._emit_for_selected(lambda v: self.approve_requested.emit(v.id)))
        self.rollout_btn.clicked.connect(lambda: self._emit_for_selected(lambda v: self.rollout_requested.emit(v.id)))
        self.rollback_btn.clicked.connect(lambda: self.rollback_requested.emit(self.model_combo.currentText()))
        self._update_buttons()
        if window is not None:
            self.transition_requested.connect(window.release.request_transition)
            self.rollback_requested.connect(window.release.request_rollback)
            self.rollout_requested.connect(window.release.request_rollout)
            self.approve_requested.connect(window.release.request_approve)
            self.selection_changed.connect(lambda ids: window.set_selection(ids, source=self.name))

    # -- the view protocol --------------------------------------------------------------------
    def refresh(self, state: Any) -> None:
        self._syncing = True  # redrawing re-selects the card: not a new selection
        try:
            self.set_snapshot(state.snapshot, state.snapshot.key_metrics(3), state.model)
            if state.selected:
                self.select_version(state.selected[0])
        finally:
            self._syncing = False

    def on_selection(self, state: Any) -> None:
        self._syncing = True
        try:
            if state.model:
                self.set_model(state.model)
            if state.selected:
                self.select_version(state.selected[0])
        finally:
            self._syncing = False

    def apply_theme(self, dark: bool) -> None:
        pass  # cards and badges take their colours from the style sheet and the phase

    # -- data -------------------------------------------------------------------------------
    def set_snapshot(self, snap: Snapshot, key_metrics: list[str], model: str | None = None) -> None:
        self.snapshot = snap
        self.key_metrics = key_metrics
        wanted = model or self.model_combo.currentText()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.model_combo.addItems(snap.models())
        idx = self.model_combo.findText(wanted) if wanted else -1
        self.model_combo.setCurrentIndex(idx if idx >= 0 else 0)
        self.model_combo.blockSignals(False)
        self._fill()

    def set_model(self, model: str) -> None:
        idx = self.model_combo.findText(model)
        if idx >= 0 and idx != self.model_combo.currentIndex():
            self.model_combo.setCurrentIndex(idx)

    def _fill(self) -> None:
        selected = self.selected_version()
        for col in self.columns.values():
            col.clear()
        if self.snapshot is None:
            return
        by_phase: dict[str, list[VersionRow]] = {}
        for v in self.snapshot.of_model(self.model_combo.currentText()):
            by_phase.setdefault(v.phase, []).append(v)
        gates_left = GATES_UP_FRONT
        self.hidden_cards = {}
        for phase, col in self.columns.items():
            rows = by_phase.get(phase, [])[::-1]  # newest first
            shown = rows[:MAX_CARDS_PER_COLUMN]
            if selected is not None and selected.phase == phase and selected not in shown:
                shown.append(selected)
            for v in shown:
                wants_gate = v.phase in NEXT_PHASE or v.phase == "production"
                if wants_gate and (gates_left > 0 or (selected is not None and selected.id == v.id)):
                    gate = self.gate_status(v)
                    gates_left -= v.phase in NEXT_PHASE
                else:
                    gate = UNCHECKED if wants_gate else ("none", v.phase)
                card = Card(v, self.key_metrics, gate)
                card.badge.setToolTip(self.gate_tip(v))
                item = QListWidgetItem()
                item.setData(Qt.ItemDataRole.UserRole, v.id)
                item.setSizeHint(card.sizeHint() + QSize(0, 4))
                col.addItem(item)
                col.setItemWidget(item, card)
                if selected is not None and selected.id == v.id:
                    item.setSelected(True)
            col.fit_cards()
            if len(rows) > len(shown):
                self.hidden_cards[phase] = len(rows) - len(shown)
                more = QListWidgetItem(f"… {len(rows) - len(shown)} older (see the Versions table)")
                more.setFlags(Qt.ItemFlag.NoItemFlags)
                col.addItem(more)
        self._update_buttons()

    # -- queries used by the window and tests -------------------------------------------------
    def cards(self, phase: str) -> list[Card]:
        col = self.columns[phase]
        widgets = [col.itemWidget(col.item(i)) for i in range(col.count())]
        return [w for w in widgets if isinstance(w, Card)]

    def card_ids(self, phase: str) -> list[int]:
        return [c.version_id for c in self.cards(phase)]

    def find_card(self, version_id: int) -> tuple[str, Card] | None:
        for phase in self.columns:
            for card in self.cards(phase):
                if card.version_id == version_id:
                    return phase, card
        return None

    def select_version(self, version_id: int) -> bool:
        for col in self.columns.values():
            for i in range(col.count()):
                if col.item(i).data(Qt.ItemDataRole.UserRole) == version_id:
                    col.setCurrentRow(i)
                    return True
        return False

    def selected_version(self) -> VersionRow | None:
        if self.snapshot is None:
            return None
        by_id = self.snapshot.by_id()
        for col in self.columns.values():
            for item in col.selectedItems():
                v = by_id.get(item.data(Qt.ItemDataRole.UserRole))
                if v is not None:
                    return v
        return None

    # -- interaction --------------------------------------------------------------------------
    def _on_select(self, source: PhaseColumn) -> None:
        if source.selectedItems():
            for col in self.columns.values():
                if col is not source:
                    col.blockSignals(True)
                    col.clearSelection()
                    col.blockSignals(False)
        v = self.selected_version()
        self._update_buttons()
        if v is not None:
            found = self.find_card(v.id)
            if found is not None and not found[1].gate_checked:
                found[1].set_gate(self.gate_status(v))
                found[1].badge.setToolTip(self.gate_tip(v))
            if not self._syncing:
                self.selection_changed.emit([v.id])

    def _update_buttons(self) -> None:
        v = self.selected_version()
        self.promote_btn.setEnabled(v is not None and v.phase in NEXT_PHASE)
        if v is not None and v.phase in NEXT_PHASE:
            self.promote_btn.setText(f"Promote → {NEXT_PHASE[v.phase]}")
        else:
            self.promote_btn.setText("Promote →")
        self.reject_btn.setEnabled(v is not None and v.phase in ("draft", "candidate", "staging"))
        self.approve_btn.setEnabled(v is not None and v.phase in NEXT_PHASE)
        self.rollout_btn.setEnabled(v is not None and v.phase == "staging")
        has_prod = bool(self.snapshot and self.snapshot.production(self.model_combo.currentText()))
        self.rollback_btn.setEnabled(has_prod)

    def _promote_selected(self) -> None:
        v = self.selected_version()
        if v is not None and v.phase in NEXT_PHASE:
            self.transition_requested.emit(v.id, NEXT_PHASE[v.phase])

    def _emit_for_selected(self, fn: Callable[[VersionRow], None]) -> None:
        v = self.selected_version()
        if v is not None:
            fn(v)
