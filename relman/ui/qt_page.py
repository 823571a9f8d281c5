"""Window parts with no state of their own: the scrolling tab page that keeps the window from
resizing itself, and the application icon (from the PNG sizes, so a slimmed frozen build
needs no SVG plugin)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QEvent, QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QFrame, QScrollArea, QWidget

from relman.errors import RelmanError
from relman.ui.resources import resource_path


class _Page(QScrollArea):
    """A tab page: the view inside a scroll area, so a view wider or taller than a laptop
    screen scrolls instead of widening the window (the window never resizes itself).

    The view takes the viewport's size, never less than its minimum size. (Not
    `setWidgetResizable`: for a view with a word-wrapped label it sizes the view to its
    preferred height-for-width, i.e. scrolls where there is room enough.)"""

    def __init__(self, view: QWidget) -> None:
        super().__init__()
        self.setObjectName(f"page-{getattr(view, 'name', 'placeholder')}")
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setWidgetResizable(False)
        self.setWidget(view)
        view.installEventFilter(self)

    def fit(self) -> None:
        view = self.widget()
        if view is None:
            return
        need = view.minimumSizeHint().expandedTo(view.minimumSize())
        room = self.maximumViewportSize()
        w, h = room.width(), room.height()
        if need.width() > w:
            h -= self.horizontalScrollBar().sizeHint().height()
        if need.height() > h:
            w -= self.verticalScrollBar().sizeHint().width()
        view.resize(max(w, need.width()), max(h, need.height()))

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt)
        super().resizeEvent(event)
        self.fit()

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt)
        if event.type() == QEvent.Type.LayoutRequest:
            QTimer.singleShot(0, self, self.fit)  # the view's minimum size may have changed
        return False


def page(view: QWidget) -> QWidget:
    """A tab page holding `view`."""
    return _Page(view)


def app_icon() -> QIcon:
    """The window icon from the PNG sizes (no SVG plugin needed in a slimmed frozen build),
    else the SVG; an empty icon if neither is there."""
    icon = QIcon()
    for size in (16, 24, 32, 48, 64, 128, 256):
        try:
            icon.addFile(str(resource_path("icons", f"relman-{size}.png")))
        except RelmanError:
            continue
    if icon.isNull():
        try:
            icon = QIcon(str(resource_path("icons", "relman.svg")))
        except RelmanError:
            pass
    return icon
