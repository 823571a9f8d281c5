"""Messages to the user: what an action did or why it could not (one place for all of them).

Every message is recorded in `messages` (tests read it), shown in the status bar and kept
in the status bar's message log (the "Messages" button lists the recent ones, newest
first). A success is a toast: a small non-modal note at the window's bottom right that
fades after a few seconds and never takes the focus. An error also opens a message box,
non-blocking (`open()`, not `exec()`), because it asks the user to do something. The end of
a job is also a desktop notification (`notify`) where the desktop has a system tray.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import QLabel, QMainWindow, QMenu, QMessageBox, QSystemTrayIcon, QToolButton

TOAST_MS = 5000
LOG_SIZE = 200


class Toast(QLabel):
    """A non-modal note over the window's bottom-right corner; hides itself after `ms`."""

    def __init__(self, window: QMainWindow) -> None:
        super().__init__(window)
        self.setObjectName("toast")
        self.setWordWrap(True)
        self.setMaximumWidth(420)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.setStyleSheet("QLabel#toast { background: rgba(40, 44, 52, 230); color: #f0f0f0; "
                           "border-radius: 6px; padding: 8px 12px; }")
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.timeout.connect(self.hide)
        self.hide()
        window.installEventFilter(self)

    def show_text(self, text: str, ms: int = TOAST_MS) -> None:
        self.setText(text)
        self.adjustSize()
        self._place()
        self.show()
        self.raise_()
        self.timer.start(ms)

    def _place(self) -> None:
        w = self.parentWidget()
        if w is None:
            return
        bar = w.statusBar().height() if isinstance(w, QMainWindow) else 0  # type: ignore[union-attr]
        self.move(max(0, w.width() - self.width() - 16), max(0, w.height() - bar - self.height() - 12))

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt)
        if event.type() == QEvent.Type.Resize and self.isVisible():
            self._place()
        return False


class MessageLog(QObject):
    shown = Signal(str, str)  # level, text

    def __init__(self, window: QMainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.messages: list[tuple[str, str]] = []
        self.log: list[tuple[str, str, str]] = []  # (time, level, text), newest last
        self.open_boxes: list[QMessageBox] = []
        self.toast = Toast(window)
        self.button = QToolButton()
        self.button.setObjectName("messages-button")
        self.button.setText("Messages")
        self.button.setToolTip("The recent messages (successes, errors, jobs that ended), newest first")
        self.button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.menu = QMenu(self.button)
        self.menu.aboutToShow.connect(self._fill_menu)
        self.button.setMenu(self.menu)
        self.tray: QSystemTrayIcon | None = None
        self.notifications: list[tuple[str, str]] = []  # desktop notifications sent (title, text)

    def info(self, text: str) -> None:
        self.show("info", text)

    def error(self, text: str, modal: bool = True) -> None:
        """An error: a box the user dismisses, or (`modal=False`, e.g. a job that failed, whose
        error the Jobs view shows inline) only the log, the status bar and a note."""
        self.show("error", text, modal)

    def status(self, text: str, ms: int = 0) -> None:
        """A line in the status bar only (progress, hints): not recorded, no toast."""
        self.window.statusBar().showMessage(text, ms)

    def show(self, level: str, text: str, modal: bool = True) -> None:
        self.messages.append((level, text))
        self.log.append((time.strftime("%H:%M:%S"), level, text))
        del self.log[:-LOG_SIZE]
        self.button.setText(f"Messages ({len(self.log)})")
        self.shown.emit(level, text)
        self.window.statusBar().showMessage(text, 10000)
        if level != "error" or not modal:
            self.toast.show_text(text)
            return
        box = QMessageBox(QMessageBox.Icon.Warning, "relman: could not do that", text,
                          QMessageBox.StandardButton.Ok, self.window)
        box.setObjectName(f"message-{level}")
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.finished.connect(lambda _=0, b=box: self.open_boxes.remove(b) if b in self.open_boxes else None)
        self.open_boxes.append(box)
        box.open()

    def notify(self, title: str, text: str, error: bool = False) -> bool:
        """A desktop notification (the system tray's balloon) where the desktop has a tray;
        returns whether one was sent. The message itself is always in the log as well."""
        self.notifications.append((title, text))
        if not QSystemTrayIcon.isSystemTrayAvailable():
            return False
        if self.tray is None:
            self.tray = QSystemTrayIcon(self.window.windowIcon(), self.window)
            self.tray.setToolTip("relman")
            self.tray.show()
        icon = QSystemTrayIcon.MessageIcon.Warning if error else QSystemTrayIcon.MessageIcon.Information
        self.tray.showMessage(title, text, icon, 8000)
        return True

    def _fill_menu(self) -> None:
        self.menu.clear()
        if not self.log:
            self.menu.addAction("No messages yet").setEnabled(False)
        for when, level, text in reversed(self.log[-30:]):
            short = text if len(text) <= 110 else text[:107] + "…"
            act = self.menu.addAction(f"{when}  {'⚠ ' if level == 'error' else ''}{short}")
            act.setToolTip(text)
            act.triggered.connect(lambda _=False, t=text: self.toast.show_text(t, 10000))
