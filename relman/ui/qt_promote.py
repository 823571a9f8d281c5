"""The promotion dialog: the gate report of a transition, rule by rule, the approvals, the
reason, and an override that needs a reason (it is recorded). Refuses to submit when gates
fail unless overridden."""

from __future__ import annotations

import json
from typing import Any, Sequence

from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (QCheckBox, QDialogButtonBox, QFormLayout, QHeaderView, QLabel, QPlainTextEdit,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

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


class PromoteDialog(ValidatingDialog):
    """Shows the gate report for a transition; asks for the reason; refuses to submit when
    gates fail unless 'override' is ticked with a reason (the override is recorded)."""

    def __init__(self, ref: str, from_phase: str, to_phase: str, report: Any, approvals: Sequence[dict[str, Any]] = (),
                 parent: QWidget | None = None, gate_error: str = "") -> None:
        super().__init__(f"Promote {ref} to {to_phase}", parent)
        self.ref, self.to_phase = ref, to_phase
        self.report = report
        self.passed = report_passed(report)
        self.allowed = bool(getattr(report, "allowed", True)) if report is not None else True
        rules = report_rules(report)
        self.rules_table = QTableWidget(len(rules), 3)
        self.rules_table.setObjectName("gate-rules")
        self.rules_table.setHorizontalHeaderLabels(["Rule", "Result", "Details"])
        self.rules_table.verticalHeader().setVisible(False)
        self.rules_table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        for i, r in enumerate(rules):
            ok = _rule_passed(r)
            name = str(r.get("rule") or r.get("name") or r.get("expr") or r.get("text") or "")
            inputs = r.get("inputs")
            detail = str(r.get("reason") or r.get("message") or r.get("detail") or "") + (
                f"  {json.dumps(inputs, default=str)}" if inputs else "")
            detail = detail or str(
                         json.dumps({k: v for k, v in r.items() if k not in ("rule", "name", "passed", "ok")},
                                    default=str))
            status = str(r.get("status") or ("pass" if ok else "fail"))
            result = QTableWidgetItem(status if ok else status.upper())
            result.setForeground(QBrush(QColor("#2e9d57" if ok else "#c4453b")))
            self.rules_table.setItem(i, 0, QTableWidgetItem(name))
            self.rules_table.setItem(i, 1, result)
            self.rules_table.setItem(i, 2, QTableWidgetItem(detail))
        self.rules_table.resizeColumnsToContents()
        if gate_error:
            verdict = f"Gates could not be evaluated: {gate_error}"
        elif self.passed is None:
            verdict = "No gates apply to this transition."
        elif not self.allowed:
            verdict = f"The policy does not allow {from_phase} → {to_phase}; edit the policy to allow it."
        elif self.passed:
            verdict = "All gates pass."
        else:
            verdict = "Gates FAIL: promotion is refused unless you override with a reason (the override is recorded)."
        self.verdict = QLabel(verdict)
        self.verdict.setObjectName("gate-verdict")
        self.verdict.setWordWrap(True)
        self.verdict.setStyleSheet(f"font-weight: bold; color: {'#c4453b' if self.passed is False else '#2e9d57'};")
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
        ok.setEnabled(self.passed is not False or self.override.isChecked())

    def values(self) -> dict[str, Any]:
        reason = self.reason.toPlainText().strip()
        if self.passed is False and not self.override.isChecked():
            raise RelmanError(f"gates fail for {self.ref} → {self.to_phase}; tick 'override' and give a reason, or fix "
                              "the failing rules")
        if self.override.isChecked() and not reason:
            raise RelmanError("an override needs a reason")
        return {"to_phase": self.to_phase, "why": reason, "override": self.override.isChecked()}
