"""Editing a version's tags: one line of space-separated names; OK adds and removes the
difference through `relman.app.tags` (small audited writes, like approvals)."""

from __future__ import annotations

from typing import Any, Sequence

from PySide6.QtWidgets import QFormLayout, QLabel, QLineEdit, QWidget

from relman.ui.qt_dialogs import ValidatingDialog


class TagsDialog(ValidatingDialog):
    def __init__(self, ref: str, tags: Sequence[str], parent: QWidget | None = None) -> None:
        super().__init__(f"Tags of {ref}", parent)
        self.setObjectName("tags-dialog")
        self.original = list(tags)
        self.tags = QLineEdit(" ".join(tags))
        self.tags.setPlaceholderText("e.g. baseline paper-v2 (MODEL@TAG resolves while a tag is unique)")
        form = QFormLayout(self)
        form.addRow(QLabel(f"Tags of {ref}, separated by spaces"))
        form.addRow("Tags", self.tags)
        form.addRow(self.error_label)
        form.addRow(self.buttons)

    def values(self) -> dict[str, Any]:
        from relman.app.tags import check_tag_name

        wanted = list(dict.fromkeys(self.tags.text().split()))
        for name in wanted:
            check_tag_name(name)
        return {"add": [t for t in wanted if t not in self.original],
                "remove": [t for t in self.original if t not in wanted]}

