"""File → View model card…: the selected version's model card, rendered.

The card is the Markdown `relman.release.modelcard.render_card` writes (the same text as
`relman card REF` and the README of an exported bundle), shown with QTextBrowser.setMarkdown.
Two things are adapted for the window only: the YAML front matter (Hugging Face metadata) is
shown as a code block rather than as stray text between two rules, and "not filled in yet:
`relman card … --set …`" names the window's "Write model card…" instead of a command. The
card is read from catalog rows (no artifact is opened), so it is built on the GUI thread.
"""

from __future__ import annotations

import re
from typing import Any

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QPushButton, QTextBrowser, QVBoxLayout, QWidget

_FRONT = re.compile(r"\A---\n(?P<yaml>.*?)\n---\n", re.S)
_CLI_HINT = re.compile(r"_Not filled in yet: `relman card \S+ --set (?P<field>\w+)=\"\.\.\.\"`_")


def card_for_window(markdown: str) -> str:
    """The card's Markdown, worded for the window (see the module docstring)."""
    markdown = _FRONT.sub(lambda m: "```yaml\n" + m.group("yaml") + "\n```\n", markdown, count=1)
    return _CLI_HINT.sub(lambda m: f"_Not filled in yet: fill in “{m.group('field').replace('_', ' ')}” with "
                                   "File → Write model card…_", markdown)


class ModelCardViewer(QDialog):
    def __init__(self, ref: str, markdown: str, parent: QWidget | None = None, *, on_edit: Any = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Model card of {ref}")
        self.setObjectName("model-card-viewer")
        self.resize(820, 680)
        self.markdown = markdown
        self.browser = QTextBrowser()
        self.browser.setObjectName("model-card")
        self.browser.setOpenExternalLinks(True)
        self.browser.setMarkdown(card_for_window(markdown))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        self.edit_button = QPushButton("Edit / write to a file…")
        self.edit_button.setObjectName("model-card-edit")
        buttons.addButton(self.edit_button, QDialogButtonBox.ButtonRole.ActionRole)
        if on_edit is not None:
            def edit() -> None:
                self.accept()
                on_edit()
            self.edit_button.clicked.connect(edit)
        else:
            self.edit_button.setVisible(False)
        lay = QVBoxLayout(self)
        lay.addWidget(self.browser, 1)
        lay.addWidget(buttons)


def open_model_card(window: Any) -> ModelCardViewer:
    """The viewer for the (first) selected version; not modal, so it can stay beside the views."""
    from relman.app.release import version_of
    from relman.release.modelcard import render_card
    from relman.ui.controllers import Controller

    v = Controller(window).selected_or_error("view its model card")[0]
    text = render_card(window.catalog, version_of(window.catalog, v.ref))
    dialog = ModelCardViewer(v.ref, text, window,
                             on_edit=lambda: window.guarded("card", window.work.action_model_card))
    window.model_card_viewer = dialog
    dialog.open()
    return dialog
