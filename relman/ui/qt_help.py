"""Help: the keyboard shortcut sheet (generated from the window's actions, so it never goes
stale) and the About box (versions and the catalog in use)."""

from __future__ import annotations

import sys
from typing import Any

from PySide6.QtWidgets import (QAbstractItemView, QDialog, QDialogButtonBox, QHeaderView, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)


def shortcut_rows(window: Any) -> list[tuple[str, str]]:
    """(action, shortcut) for every action of the window that has a shortcut, menu order first."""
    rows: list[tuple[str, str]] = []
    for act in window.actions():
        key = act.shortcut().toString()
        if key:
            rows.append((act.text().rstrip("…").replace("&", ""), key))
    return rows


class ShortcutsDialog(QDialog):
    def __init__(self, window: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent or window)
        self.setWindowTitle("Keyboard shortcuts")
        rows = shortcut_rows(window)
        self.table = QTableWidget(len(rows), 2)
        self.table.setObjectName("shortcuts")
        self.table.setHorizontalHeaderLabels(["Action", "Shortcut"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for r, (text, key) in enumerate(rows):
            self.table.setItem(r, 0, QTableWidgetItem(text))
            self.table.setItem(r, 1, QTableWidgetItem(key))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(420, 520)


def about_text(window: Any) -> str:
    import PySide6
    import pyqtgraph

    import relman

    return (f"relman {relman.__version__}\n\nCatalog: {window.catalog.root}\n\n"
            f"Python {sys.version.split()[0]} · PySide6 {PySide6.__version__} · pyqtgraph {pyqtgraph.__version__}\n"
            "Heavy libraries (torch, transformers, onnxruntime) load only in worker processes.")


# What each action does, for its tooltip (where the controller gave none): more than its name.
ACTION_TIPS = {
    "open": "Open another catalog folder (the views, jobs and selection start afresh)",
    "import": "Copy a model (Hugging Face folder, .safetensors, .onnx, torch weights) into the catalog "
              "as a new version; runs as a job",
    "dataset": "Register a dataset file or folder (CSV, JSONL, Parquet, NPZ, image folders) for "
               "evaluation and calibration; runs as a job",
    "compress": "Make a smaller or faster child of the selected version(s) with a recipe "
                "(quantize, prune, distil, merge…); the child is evaluated when a dataset is chosen",
    "evaluate": "Measure the selected versions: the suites that apply to their task "
                "(quality, latency, size, fidelity to a parent…)",
    "optimize": "Search recipes for the smallest/fastest child whose accuracy drop stays under a limit",
    "promote": "Move the selected version to its next phase after checking the policy's gates",
    "rollback": "Put the previous production version of the focused model back into production",
    "export": "Write the selected version as a signed bundle (choose or create a signing key)",
    "import-bundle": "Import a signed bundle from another catalog (its key must be trusted here)",
    "card": "Edit the model card's fields (intended use, limitations, licence) and write README.md",
    "verify": "Re-check the audit log's hash chain and say whether it is intact",
    "tags": "Add or remove tags on the selected version",
    "delete": "Delete the selected version and its files (refused while it is released or a parent)",
    "archive": "Move the selected version's files out of the store, or bring them back",
    "gc": "Remove blobs no version uses any more and old job logs",
    "refresh": "Re-read the catalog now",
    "theme": "Switch between the light and the dark theme",
    "find": "Filter the versions table by name, phase, recipe or tag",
}
