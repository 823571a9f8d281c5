"""Delete confirmation: says what goes, how many bytes are freed and what stays shared,
shows a refusal (production, canary, rollback target, adapter base…) instead of an OK, and
asks why. The delete itself runs as a "delete_version" job (releasing blobs touches the disk);
see relman.ui.controllers.catalog_actions."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QDialogButtonBox, QFormLayout, QLabel, QLineEdit, QWidget

from relman.errors import RelmanError
from relman.ui.qt_dialogs import ValidatingDialog
from relman.units import human_size


class DeleteDialog(ValidatingDialog):
    def __init__(self, plan: dict[str, Any], parent: QWidget | None = None) -> None:
        super().__init__(f"Delete {plan['ref']}", parent)
        self.plan = plan
        self.setObjectName("delete-dialog")
        self.summary = QLabel(
            f"Delete {plan['ref']}? This frees {human_size(plan['unique_bytes'])} on disk "
            f"({plan['files']} files); {human_size(plan['shared_bytes'])} shared with other versions stays.\n"
            "The version leaves every listing; its lineage keeps a tombstone and the audit log records who, "
            f"when, why and its manifest ({plan['manifest_sha256'][:16]}…).")
        self.summary.setObjectName("delete-summary")
        self.summary.setWordWrap(True)
        self.why = QLineEdit()
        self.why.setPlaceholderText("why it goes (recorded in the audit log)")
        form = QFormLayout(self)
        form.addRow(self.summary)
        form.addRow("Why", self.why)
        form.addRow(self.error_label)
        form.addRow(self.buttons)
        if plan.get("refused"):
            self.error_label.setText(plan["refused"])
            self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(False)
            self.why.setEnabled(False)
        else:
            self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText(
                f"Delete and free {human_size(plan['unique_bytes'])}")

    def values(self) -> dict[str, Any]:
        if self.plan.get("refused"):
            raise RelmanError(self.plan["refused"])
        why = self.why.text().strip()
        if not why:
            raise RelmanError("say why the version is deleted; it goes into the audit log")
        return {"why": why}

