"""Release paperwork in the window instead of the terminal: the export dialog (where to, and
which signing key, with a button that creates one as `relman keys create` does) and the
model-card dialog (the card's fields, as `relman card --set` sets them, and optionally the
README file). Both only collect and check input; `WorkActions` does the work through
`relman.app.bundles`, inside the dialog, so an error keeps what was typed."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from PySide6.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QInputDialog, QLabel, QLineEdit,
                               QPlainTextEdit, QPushButton, QWidget)

from relman.errors import RelmanError
from relman.ui.qt_dialogs import ValidatingDialog, _path_row


class ExportDialog(ValidatingDialog):
    """Bundle path + signing key (own keys listed; "New key…" makes one)."""

    def __init__(self, ref: str, default_path: str, keys: Sequence[str], parent: QWidget | None = None,
                 create_key: Callable[[str], str] | None = None) -> None:
        super().__init__(f"Export {ref} as a signed bundle", parent)
        self.ref = ref
        self.create_key_fn = create_key
        self.path = QLineEdit(default_path)
        self.path.setObjectName("export-path")
        self.key = QComboBox()
        self.key.setObjectName("signing-key")
        self.key.addItems(list(keys))
        self.key.setToolTip("The bundle is signed with this key; whoever imports it must trust its public key")
        self.new_key = QPushButton("New key…")
        self.new_key.setObjectName("new-key")
        self.new_key.setToolTip("Create a signing key pair on this machine (as 'relman keys create NAME')")
        self.new_key.clicked.connect(self._ask_new_key)
        key_row = QWidget()
        kl = QHBoxLayout(key_row)
        kl.setContentsMargins(0, 0, 0, 0)
        kl.addWidget(self.key, 1)
        kl.addWidget(self.new_key)
        self.no_key = QLabel("" if keys else "No signing key on this machine yet: create one with New key….")
        self.no_key.setObjectName("hint")
        self.no_key.setWordWrap(True)
        form = QFormLayout(self)
        form.addRow("Bundle file", _path_row(self.path, self, folder=False))
        form.addRow("Signing key", key_row)
        form.addRow("", self.no_key)
        form.addRow(self.error_label)
        form.addRow(self.buttons)

    def _ask_new_key(self) -> None:
        name, ok = QInputDialog.getText(self, "New signing key", "Key name (letters, digits, - and _):")
        if ok:
            self.add_key(name.strip())

    def add_key(self, name: str) -> None:
        """Create key `name` (errors shown here) and choose it."""
        if self.create_key_fn is None:
            return
        try:
            made = self.create_key_fn(name)
        except RelmanError as e:
            self.show_error(str(e))
            return
        self.show_success(f"created key {made}; the bundle is signed with it")
        self.no_key.setText("")
        if self.key.findText(made) < 0:
            self.key.addItem(made)
        self.key.setCurrentText(made)

    def values(self) -> dict[str, Any]:
        path = self.path.text().strip()
        if not path:
            raise RelmanError("choose where to write the bundle")
        if not self.key.currentText():
            raise RelmanError("choose a signing key, or create one with New key…")
        return {"ref": self.ref, "path": path, "key": self.key.currentText()}


class CardDialog(ValidatingDialog):
    """The model card's own fields (relman.release.modelcard.CARD_FIELDS) and where to write it."""

    MULTILINE = ("intended_use", "limitations", "description")

    def __init__(self, ref: str, fields: dict[str, str], names: Sequence[str], default_path: str,
                 parent: QWidget | None = None) -> None:
        super().__init__(f"Model card of {ref}", parent)
        self.ref = ref
        self.editors: dict[str, QWidget] = {}
        form = QFormLayout(self)
        for name in names:
            if name in self.MULTILINE:
                w: QWidget = QPlainTextEdit(fields.get(name, ""))
                w.setFixedHeight(70)
            else:
                w = QLineEdit(fields.get(name, ""))
            w.setObjectName(f"card-{name}")
            self.editors[name] = w
            form.addRow(name.replace("_", " ").capitalize(), w)
        self.write = QCheckBox("Also write the card (README.md) to")
        self.write.setObjectName("card-write")
        self.path = QLineEdit(default_path)
        self.path.setEnabled(False)
        self.write.toggled.connect(self.path.setEnabled)
        form.addRow(self.write, self.path)
        form.addRow(self.error_label)
        form.addRow(self.buttons)

    def set_field(self, name: str, text: str) -> None:
        w = self.editors[name]
        if isinstance(w, QPlainTextEdit):
            w.setPlainText(text)
        else:
            w.setText(text)  # type: ignore[attr-defined]

    def values(self) -> dict[str, Any]:
        fields = {n: (w.toPlainText() if isinstance(w, QPlainTextEdit) else w.text()).strip()  # type: ignore[attr-defined]
                  for n, w in self.editors.items()}
        path = self.path.text().strip() if self.write.isChecked() else None
        if self.write.isChecked() and not path:
            raise RelmanError("choose where to write the model card, or untick 'Also write'")
        return {"ref": self.ref, "fields": fields, "path": path}
