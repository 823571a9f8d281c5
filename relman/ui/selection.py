"""One selection for the whole window: which versions are selected and which model is in focus.

Why one object: the model tree, the versions table, the release board, the plots and the
lineage graph all show "the selected version", and the actions (Promote, Evaluate, …) act
on it. Each view writes to this object and redraws from it; none keeps a selection of its
own that could disagree with the others.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal


class Selection(QObject):
    changed = Signal(list)  # selected version ids, in selection order
    model_changed = Signal(str)  # the model in focus ("" = none)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.ids: list[int] = []
        self.model: str | None = None

    def set(self, ids: list[int], model: str | None = None) -> bool:
        """Select `ids` (and focus `model`, the first version's model when given); returns
        whether anything changed."""
        ids = [int(i) for i in ids]
        model_moved = model is not None and model != self.model
        if model_moved:
            self.model = model
        if ids == self.ids:
            if model_moved:
                self.model_changed.emit(model or "")
            return model_moved
        self.ids = ids
        if model_moved:
            self.model_changed.emit(model or "")
        self.changed.emit(list(ids))
        return True

    def focus_model(self, model: str | None) -> None:
        if model != self.model:
            self.model = model
            self.model_changed.emit(model or "")

    def clear(self) -> None:
        """Forget everything (a catalog switch): ids of another catalog mean nothing here."""
        self.model = None
        if self.ids:
            self.ids = []
            self.changed.emit([])
