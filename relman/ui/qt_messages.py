"""Messages to the user: what an action did or why it could not (one place, so a
notification area can replace the message boxes without touching the actions).

Every message is recorded in `messages` (tests and the status bar read it) and shown in the
status bar; it is also shown in a non-blocking message box (`open()`, not `exec()`).
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QMainWindow, QMessageBox


class MessageLog(QObject):
    shown = Signal(str, str)  # level, text

    def __init__(self, window: QMainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.messages: list[tuple[str, str]] = []
        self.open_boxes: list[QMessageBox] = []

    def info(self, text: str) -> None:
        self.show("info", text)

    def error(self, text: str) -> None:
        self.show("error", text)

    def status(self, text: str, ms: int = 0) -> None:
        """A line in the status bar only (progress, hints): not recorded, no box."""
        self.window.statusBar().showMessage(text, ms)

    def show(self, level: str, text: str) -> None:
        self.messages.append((level, text))
        self.shown.emit(level, text)
        self.window.statusBar().showMessage(text, 10000)
        box = QMessageBox(QMessageBox.Icon.Warning if level == "error" else QMessageBox.Icon.Information,
                          "relman" if level == "info" else "relman: could not do that", text,
                          QMessageBox.StandardButton.Ok, self.window)
        box.setObjectName(f"message-{level}")
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.finished.connect(lambda _=0, b=box: self.open_boxes.remove(b) if b in self.open_boxes else None)
        self.open_boxes.append(box)
        box.open()
