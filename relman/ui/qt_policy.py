"""The policy editor: one model's release policy (transitions, gate rules per phase, approvals).

The policy is edited as the JSON the catalog stores and validated as you type by the same code
as `relman policy set` (`relman.release.policy.validate_text`, whose rule parser never evals):
an error shows its line and column and disables Save — a rule naming a metric no suite declares
and the catalog does not hold (`acuracy`) is such an error, with a suggestion. Below the text, a preview evaluates the
draft's gates for every version of the model against the metrics stored now (artifact hashes
are not re-checked here — that is promotion's job, in a worker), so the effect of a rule is
visible before it is saved. The revisions list shows every stored revision (loading one puts it
in the editor); Save stores a new revision with its `policy-edit` audit event.
"""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QBrush, QColor, QTextCursor
from PySide6.QtWidgets import (QDialog, QHBoxLayout, QHeaderView, QLabel, QListWidget, QListWidgetItem,
                               QPlainTextEdit, QPushButton, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout,
                               QWidget)

from relman.errors import RelmanError

PREVIEW_PHASES = ("candidate", "staging", "production")
PASS, FAIL = QColor(198, 239, 206), QColor(255, 199, 206)


class PolicyEditor(QDialog):
    def __init__(self, catalog: Any, model: str, parent: QWidget | None = None, *, actor: str | None = None) -> None:
        super().__init__(parent)
        self.catalog, self.model, self.actor = catalog, model, actor
        self.setWindowTitle(f"Release policy of {model}")
        self.setObjectName("policy-editor")
        self.resize(980, 680)
        self.body: dict[str, Any] | None = None
        self.saved_revision: int | None = None
        from relman.release.metric_names import stored_names

        self.stored_metrics = stored_names(catalog)  # once per opening: what rules may name

        self.editor = QPlainTextEdit()
        self.editor.setObjectName("policy-text")
        self.editor.setTabStopDistance(24)
        self.status = QLabel("")
        self.status.setObjectName("policy-status")
        self.status.setWordWrap(True)
        self.revisions = QListWidget()
        self.revisions.setObjectName("policy-revisions")
        self.revisions.itemActivated.connect(self._load_revision)
        self.revisions.itemDoubleClicked.connect(self._load_revision)
        self.preview = QTableWidget(0, 1 + len(PREVIEW_PHASES))
        self.preview.setObjectName("policy-preview")
        self.preview.setHorizontalHeaderLabels(["Version"] + [f"→ {p}" for p in PREVIEW_PHASES])
        self.preview.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.preview.verticalHeader().setVisible(False)
        self.save_button = QPushButton("Save as new revision")
        self.save_button.setObjectName("policy-save")
        self.save_button.clicked.connect(self.save)
        close = QPushButton("Close")
        close.clicked.connect(self.reject)

        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(QLabel("Revisions (double-click to load)"))
        ll.addWidget(self.revisions, 1)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        head = QHBoxLayout()
        head.addWidget(QLabel("Policy (JSON): transitions, gates per phase, approvals"), 1)
        head.addWidget(self._build_help())  # the grammar and examples, beside the text (relman.ui.policy_help)
        rl.addLayout(head)
        rl.addWidget(self.editor, 3)
        rl.addWidget(self.status)
        rl.addWidget(QLabel("Preview: would each version pass the gates into each phase (stored metrics, now)?"))
        rl.addWidget(self.preview, 2)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.addWidget(self.help)
        split.setStretchFactor(1, 4)
        split.setStretchFactor(2, 3)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.save_button)
        buttons.addWidget(close)
        lay = QVBoxLayout(self)
        lay.addWidget(split, 1)
        lay.addLayout(buttons)

        self._preview_timer = QTimer(self)
        self._preview_timer.setSingleShot(True)
        self._preview_timer.setInterval(250)
        self._preview_timer.timeout.connect(self.update_preview)
        self.editor.textChanged.connect(self._on_text_changed)
        self.reload()

    def _build_help(self) -> QPushButton:
        """A "Syntax help" toggle and the panel it shows (hidden until asked for)."""
        from PySide6.QtWidgets import QTextBrowser

        from relman.ui.policy_help import policy_help_markdown

        self.help = QTextBrowser()
        self.help.setObjectName("policy-help")
        self.help.setMarkdown(policy_help_markdown(self.stored_metrics))
        self.help.setVisible(False)
        self.help_button = QPushButton("Syntax help")
        self.help_button.setObjectName("policy-help-button")
        self.help_button.setCheckable(True)
        self.help_button.setToolTip("The policy's keys, the gate-rule grammar, examples and metric names")
        self.help_button.toggled.connect(self.help.setVisible)
        return self.help_button

    # -- content --------------------------------------------------------------------------------
    def reload(self) -> None:
        from relman.release.policy import get_policy, revisions

        body, rev = get_policy(self.catalog, self.model)
        self.revisions.clear()
        for r in revisions(self.catalog, self.model):
            item = QListWidgetItem(f"revision {r['revision']} — {r['created_at'][:19].replace('T', ' ')} "
                                   f"by {r['created_by']}")
            item.setData(Qt.ItemDataRole.UserRole, r["body"])
            self.revisions.addItem(item)
        item = QListWidgetItem("built-in default (revision 0)")
        from relman.release.policy import default_policy

        item.setData(Qt.ItemDataRole.UserRole, default_policy())
        self.revisions.addItem(item)
        self.set_text(json.dumps(body, indent=2))
        self.current_revision = rev

    def set_text(self, text: str) -> None:
        self.editor.setPlainText(text)

    def _load_revision(self, item: QListWidgetItem) -> None:
        self.set_text(json.dumps(item.data(Qt.ItemDataRole.UserRole), indent=2))

    # -- validation -----------------------------------------------------------------------------
    def _on_text_changed(self) -> None:
        self.validate()
        if self.body is not None:
            self._preview_timer.start()

    def validate(self) -> dict[str, Any] | None:
        """Check the text with the CLI's own parser; show the error with its position."""
        from relman.release.policy import PolicyTextError, validate_text

        try:
            self.body = validate_text(self.editor.toPlainText(), f"policy of {self.model}",
                                      stored_metrics=self.stored_metrics)
        except PolicyTextError as e:
            self.body = None
            self.error = e
            self.status.setText(f"✗ {e}")
            self.status.setStyleSheet("color: #c4453b;")
            self.save_button.setEnabled(False)
            return None
        self.error = None
        self.status.setText("✓ valid policy")
        self.status.setStyleSheet("color: #2e7d32;")
        self.save_button.setEnabled(True)
        return self.body

    def jump_to_error(self) -> None:
        """Put the cursor where the error is (line, column)."""
        e = getattr(self, "error", None)
        if e is None or e.line is None:
            return
        block = self.editor.document().findBlockByNumber(e.line - 1)
        cur = QTextCursor(block)
        cur.movePosition(QTextCursor.MoveOperation.Right, n=max(0, (e.column or 1) - 1))
        self.editor.setTextCursor(cur)

    # -- preview --------------------------------------------------------------------------------
    def preview_results(self) -> dict[tuple[str, str], Any]:
        """(version ref, phase) → the gate report under the draft policy."""
        from relman.release.gates import RuleResult, evaluate_gates

        out: dict[tuple[str, str], Any] = {}
        if self.body is None:
            return out
        skipped = RuleResult("artifacts intact", "skipped", "not re-hashed in the preview")
        for v in self.catalog.versions(self.model):
            for phase in PREVIEW_PHASES:
                out[(v.ref, phase)] = evaluate_gates(self.catalog, v, phase, policy=self.body, revision=-1,
                                                     integrity=skipped, rehash=False)
        return out

    def update_preview(self) -> None:
        results = self.preview_results()
        refs = sorted({ref for ref, _ in results}, key=lambda r: r)
        self.preview.setRowCount(len(refs))
        for row, ref in enumerate(refs):
            self.preview.setItem(row, 0, QTableWidgetItem(ref))
            for c, phase in enumerate(PREVIEW_PHASES, start=1):
                rep = results[(ref, phase)]
                failing = rep.failing
                ok = not failing
                text = "pass" if ok else f"fail ({len(failing)})"
                item = QTableWidgetItem(text)
                item.setBackground(QBrush(PASS if ok else FAIL))
                item.setForeground(QBrush(QColor(20, 20, 20)))
                item.setToolTip("\n".join(f"{r.status}: {r.rule} — {r.reason}" for r in rep.rules) or "no rules")
                self.preview.setItem(row, c, item)

    def cell_text(self, ref: str, phase: str) -> str:
        for row in range(self.preview.rowCount()):
            if self.preview.item(row, 0).text() == ref:
                return self.preview.item(row, 1 + PREVIEW_PHASES.index(phase)).text()
        raise KeyError(ref)

    # -- saving ---------------------------------------------------------------------------------
    def save(self) -> int | None:
        from relman.app.release import set_policy

        body = self.validate()
        if body is None:
            return None
        try:
            self.saved_revision = set_policy(self.catalog, self.model, body, who=self.actor)
        except RelmanError as e:
            self.status.setText(f"✗ {e}")
            return None
        self.status.setText(f"✓ saved as revision {self.saved_revision}")
        self.reload()
        return self.saved_revision


def open_policy_editor(window: Any) -> PolicyEditor | None:
    """The window's "Edit release policy…" action: the editor for the current model."""
    model = window.current_model()
    if not model:
        window.show_error("Select a model (or one of its versions) to edit its release policy.")
        return None
    dlg = PolicyEditor(window.catalog, model, window)
    window.policy_editor = dlg
    window.dialog_runner(dlg)
    window.refresh(force=True)
    return dlg
