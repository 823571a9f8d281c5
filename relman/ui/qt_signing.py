"""Approving with a signature from the GUI: pick (or create) your key from `relman keys` and
sign the approval with it, so a policy that requires signed approvals accepts it.

The dialog is a `SimpleFormDialog` (By, Comment, Sign with) plus a "New key" row that creates
a key pair in the keys folder through `relman.app.bundles.create_key` (the one function
`relman keys create NAME` and the export dialog call too: Ed25519 plus its P-256 twin) and
selects it.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLineEdit, QPushButton, QWidget

from relman.errors import RelmanError
from relman.ui.qt_dialogs import SimpleFormDialog

UNSIGNED = "(not signed)"


def own_keys() -> list[str]:
    from relman.release import keys

    try:
        return [k["name"] for k in keys.list_keys() if k["kind"] == "own"]
    except OSError:
        return []


class SignedApproveDialog(SimpleFormDialog):
    """Approve REF for a phase, optionally signed with one of your keys."""

    def __init__(self, ref: str, to_phase: str, by: str, parent: QWidget | None = None) -> None:
        self.by_edit = QLineEdit(by)
        self.comment_edit = QLineEdit()
        self.key_combo = QComboBox()
        self.key_combo.addItems([UNSIGNED] + own_keys())
        if self.key_combo.count() == 2:  # exactly one key of yours: sign with it by default
            self.key_combo.setCurrentIndex(1)
        row = QWidget()
        lay = QHBoxLayout(row)
        lay.setContentsMargins(0, 0, 0, 0)
        self.new_key_edit = QLineEdit()
        self.new_key_edit.setPlaceholderText("name for a new key, e.g. alice")
        self.create_btn = QPushButton("Create key")
        self.create_btn.clicked.connect(self.create_key)
        lay.addWidget(self.new_key_edit, 1)
        lay.addWidget(self.create_btn)

        def check(values: dict[str, Any]) -> None:
            if not values.get("By"):
                raise RelmanError("say who approves (By)")

        super().__init__(f"Approve {ref} → {to_phase}", [("By", self.by_edit), ("Comment", self.comment_edit),
                                                          ("Sign with", self.key_combo), ("New key", row)],
                         check, parent)

    def create_key(self) -> None:
        """Create the key named in the field, select it; errors show inline."""
        from relman.app.bundles import create_key

        try:
            made = create_key(self.new_key_edit.text().strip())
        except RelmanError as e:
            self.show_error(str(e))
            return
        self.key_combo.addItem(made["name"])
        self.key_combo.setCurrentText(made["name"])
        self.new_key_edit.clear()
        self.show_success(f"created key {made['name']} ({made['id']}); it is trusted on this machine")

    def values(self) -> dict[str, Any]:
        out = super().values()
        key = out.pop("Sign with", UNSIGNED)
        out["key"] = None if key == UNSIGNED else key
        return out
