"""The promotion dialog: the gate report of a transition, rule by rule, the approvals, the
reason, and an override that needs a reason (it is recorded). Refuses to submit when gates
fail unless overridden."""

from __future__ import annotations

from typing import Any, Sequence

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRect, QSize, Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (QCheckBox, QDialogButtonBox, QFormLayout, QHeaderView, QLabel, QPlainTextEdit,
                               QStyledItemDelegate, QStyleOptionViewItem, QTableWidget, QTableWidgetItem, QVBoxLayout,
                               QWidget)

from relman.errors import RelmanError
from relman.ui.qt_dialogs import ValidatingDialog


def report_rules(report: Any) -> list[dict[str, Any]]:
    """The per-rule rows of a gate report, whatever container the release API uses."""
    if report is None:
        return []
    if hasattr(report, "to_dict"):
        report = report.to_dict()
    elif hasattr(report, "__dataclass_fields__"):
        from dataclasses import asdict

        report = asdict(report)
    if isinstance(report, dict):
        for key in ("rules", "results", "checks", "gates"):
            if isinstance(report.get(key), list):
                return [r if isinstance(r, dict) else {"rule": str(r)} for r in report[key]]
        return []
    if isinstance(report, list):
        return [r if isinstance(r, dict) else {"rule": str(r)} for r in report]
    return []


def report_passed(report: Any) -> bool | None:
    if report is None:
        return None
    for attr in ("passed", "ok"):
        if hasattr(report, attr):
            return bool(getattr(report, attr))
        if isinstance(report, dict) and attr in report:
            return bool(report[attr])
    rules = report_rules(report)
    return all(_rule_passed(r) for r in rules) if rules else None


def _rule_passed(rule: dict[str, Any]) -> bool:
    """A rule passes unless it says it failed ('skipped' rules do not block)."""
    for key in ("passed", "ok", "pass"):
        if key in rule:
            return bool(rule[key])
    return str(rule.get("status", "")).lower() not in ("fail", "failed", "error")


RESULT_TEXT = {"pass": "✓ pass", "fail": "✗ FAIL", "skipped": "○ skipped", "pending": "⧗ pending"}
RESULT_COLORS = {"pass": "#2e9d57", "fail": "#c4453b", "skipped": "#b07d12", "pending": "#3b6fd8"}


def _rule_order(rule: dict[str, Any]) -> int:
    """Failures first, then pending, skipped (checked nothing), passed: relman gates' order."""
    from relman.release.gates import STATUS_ORDER

    status = str(rule.get("status", "")).lower()
    return STATUS_ORDER.get(status, STATUS_ORDER["fail"] if not _rule_passed(rule) else STATUS_ORDER["pass"])


class _ElidedDelegate(QStyledItemDelegate):
    """Draws its column on one line, elided at the right (the table wraps its other columns):
    a long rule text stays in its column, whole in the cell's tooltip."""

    def initStyleOption(self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> None:
        super().initStyleOption(option, index)
        option.features &= ~QStyleOptionViewItem.ViewItemFeature.WrapText  # type: ignore[attr-defined]
        option.textElideMode = Qt.TextElideMode.ElideRight  # type: ignore[attr-defined]


def _value_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_value_text(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_value_text(v) for v in value)
    return str(value)


def rule_details(rule: dict[str, Any]) -> str:
    """A rule's outcome as a sentence ('accuracy 0.81 [0.78, 0.84] ≥ 0.8 (production 0.83)':
    relman.release.gates writes it, with the values it compared), not raw JSON; who approved
    where an approvals rule names them. A row without a reason shows its fields in words."""
    reason = str(rule.get("reason") or rule.get("message") or rule.get("detail") or "")
    inputs = rule.get("inputs")
    parts = [reason] if reason else []
    by = inputs.get("by") if isinstance(inputs, dict) else None
    if isinstance(by, list) and by:
        parts.append("by " + ", ".join(str(b) for b in by))
    elif isinstance(inputs, dict) and inputs and not parts:
        parts.append("; ".join(f"{str(k).replace('_', ' ')} {_value_text(v)}" for k, v in inputs.items()))
    elif not parts:
        parts.append("; ".join(f"{k} {_value_text(v)}" for k, v in rule.items()
                               if k not in ("rule", "name", "passed", "ok", "status")))
    return " — ".join(parts)


class _WrappedDelegate(QStyledItemDelegate):
    """Wraps its column's text and asks for the height the wrapped text needs at the width the
    column has (the style's own hint measured without the cell's margins, so a sentence a few
    pixels too long was cut to '…' instead of getting its second line)."""

    MARGIN = 12

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> QSize:
        hint = super().sizeHint(option, index)
        table = self.parent()
        width = table.columnWidth(index.column()) - self.MARGIN if isinstance(table, QTableWidget) else hint.width()
        text = str(index.data() or "")
        rect = option.fontMetrics.boundingRect(QRect(0, 0, max(20, width), 100000),  # type: ignore[attr-defined]
                                               int(Qt.TextFlag.TextWordWrap), text)
        return QSize(hint.width(), max(hint.height(), rect.height() + 8))


class PromoteDialog(ValidatingDialog):
    """Shows the gate report for a transition; asks for the reason; refuses to submit when
    gates fail unless 'override' is ticked with a reason (the override is recorded)."""

    def __init__(self, ref: str, from_phase: str, to_phase: str, report: Any, approvals: Sequence[dict[str, Any]] = (),
                 parent: QWidget | None = None, gate_error: str = "") -> None:
        super().__init__(f"Promote {ref} to {to_phase}", parent)
        self.ref, self.to_phase = ref, to_phase
        self.report = report
        self.passed = report_passed(report)
        self.refused = bool(gate_error)  # e.g. tampering found: nothing to promote on, and nothing to override
        self.allowed = bool(getattr(report, "allowed", True)) if report is not None else True
        rules = sorted(report_rules(report), key=_rule_order)  # failures first, then pending, skips, passes
        self.nothing_checked = bool(rules) and all(str(r.get("status", "")).lower() == "skipped" for r in rules)
        self.rules_table = QTableWidget(len(rules), 3)
        self.rules_table.setObjectName("gate-rules")
        # The verdict first and always on screen; the rule text is elided (full text in its tooltip)
        # and the details wrap, so a long rule never pushes the result off the dialog.
        self.rules_table.setHorizontalHeaderLabels(["Result", "Rule", "Details"])
        self.rules_table.verticalHeader().setVisible(False)
        self.rules_table.setWordWrap(True)
        self.rules_table.setItemDelegateForColumn(1, _ElidedDelegate(self.rules_table))
        self.rules_table.setItemDelegateForColumn(2, _WrappedDelegate(self.rules_table))
        header = self.rules_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        for i, r in enumerate(rules):
            ok = _rule_passed(r)
            name = str(r.get("rule") or r.get("name") or r.get("expr") or r.get("text") or "")
            status = str(r.get("status") or ("pass" if ok else "fail"))
            result = QTableWidgetItem(RESULT_TEXT.get(status.lower(), status if ok else status.upper()))
            result.setForeground(QBrush(QColor(RESULT_COLORS.get(status.lower(), "#2e9d57" if ok else "#c4453b"))))
            rule_item = QTableWidgetItem(name)
            rule_item.setToolTip(name)
            detail = QTableWidgetItem(rule_details(r))
            detail.setToolTip(detail.text())
            self.rules_table.setItem(i, 0, result)
            self.rules_table.setItem(i, 1, rule_item)
            self.rules_table.setItem(i, 2, detail)
        self.rules_table.setColumnWidth(1, 260)
        self.rules_table.resizeRowsToContents()
        # the details wrap to the width their column gets once laid out (and when resized)
        header.sectionResized.connect(lambda *_: self.rules_table.resizeRowsToContents())
        if gate_error:
            verdict = f"Refused: {gate_error}"
        elif self.passed is None:
            verdict = "No gates apply to this transition."
        elif not self.allowed:
            verdict = f"The policy does not allow {from_phase} → {to_phase}; edit the policy to allow it."
        elif self.passed and self.nothing_checked:
            verdict = (f"No rule applied (0 of {len(rules)}): nothing about this version was checked. "
                       "Skipped is not passed — add a rule that applies, or promote knowing that.")
        elif self.passed:
            verdict = "All gates pass."
        else:
            verdict = "Gates FAIL: promotion is refused unless you override with a reason (the override is recorded)."
        self.verdict = QLabel(verdict)
        self.verdict.setObjectName("gate-verdict")
        self.verdict.setWordWrap(True)
        color = "#c4453b" if self.passed is False or self.refused else ("#b07d12" if self.nothing_checked else "#2e9d57")
        self.verdict.setStyleSheet(f"font-weight: bold; color: {color};")
        self.approvals = QLabel(", ".join(f"{a.get('by')}" + (f" ({a.get('comment')})" if a.get("comment") else "")
                                          for a in approvals) or "none")
        self.reason = QPlainTextEdit()
        self.reason.setObjectName("reason")
        self.reason.setPlaceholderText("Why (recorded in the audit log)")
        self.reason.setFixedHeight(70)
        self.override = QCheckBox("Override failing gates (needs a reason)")
        self.override.setObjectName("override")
        self.override.setVisible(self.passed is False)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"<b>{ref}</b>: {from_phase} → <b>{to_phase}</b>"))
        layout.addWidget(self.verdict)
        layout.addWidget(self.rules_table, 1)
        form = QFormLayout()
        form.addRow("Approvals", self.approvals)
        form.addRow("Reason", self.reason)
        layout.addLayout(form)
        layout.addWidget(self.override)
        layout.addWidget(self.error_label)
        layout.addWidget(self.buttons)
        self.resize(640, 420)
        self.override.toggled.connect(lambda _: self._update_ok())
        self.reason.textChanged.connect(self._update_ok)
        self._update_ok()

    def _update_ok(self) -> None:
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setText("Override and promote" if self.override.isChecked() else "Promote")
        ok.setEnabled(not self.refused and (self.passed is not False or self.override.isChecked()))

    def values(self) -> dict[str, Any]:
        reason = self.reason.toPlainText().strip()
        if self.refused:
            raise RelmanError(f"{self.ref} cannot be promoted: {self.verdict.text()}")
        if self.passed is False and not self.override.isChecked():
            raise RelmanError(f"gates fail for {self.ref} → {self.to_phase}; tick 'override' and give a reason, or fix "
                              "the failing rules")
        if self.override.isChecked() and not reason:
            raise RelmanError("an override needs a reason")
        return {"to_phase": self.to_phase, "why": reason, "override": self.override.isChecked()}
