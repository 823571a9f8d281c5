"""Controllers: the window's actions, one module per area, each calling `relman.app` directly.

- `work_actions.WorkActions`: import a model, register a dataset, compress, evaluate,
  optimize, export or import a bundle, write a model card;
- `release_actions.ReleaseActions`: promote, reject, approve, canary share, roll back, the
  gate badges of the release board, audit verification;
- `job_actions.JobActions`: the job runner the window drives, cancel/retry, and the jobs the
  window queued itself (a message when each ends).

A controller declares its menu/toolbar actions in `actions()` (key, text, shortcut, slot);
the window only lays them out (`relman.ui.qt_main.MENUS`). Anything that reads large files
is queued as a job (`relman.app.background`), never run on the GUI thread. App modules are
imported inside the methods: they are light, but the window opens before it needs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from relman.errors import RelmanError

if TYPE_CHECKING:
    from relman.catalog import Catalog
    from relman.ui.qt_main import MainWindow
    from relman.ui.snapshot import VersionRow


@dataclass(frozen=True)
class ActionSpec:
    key: str
    text: str
    shortcut: str
    slot: Callable[[], Any]
    tip: str = ""


class Controller:
    def __init__(self, window: "MainWindow") -> None:
        self.window = window

    @property
    def catalog(self) -> "Catalog":
        return self.window.catalog

    def actions(self) -> list[ActionSpec]:
        return []

    def run_dialog(self, dialog: Any) -> dict[str, Any] | None:
        """The dialog's values when accepted (through the window's dialog runner, which tests
        replace), else None."""
        from PySide6.QtWidgets import QDialog

        if self.window.dialog_runner(dialog) == QDialog.DialogCode.Accepted and dialog.result_values is not None:
            return dialog.result_values  # may be {} (a confirmation without fields)
        return None

    def selected_or_error(self, what: str) -> list["VersionRow"]:
        v = self.window.selected_versions()
        if not v:
            raise RelmanError(f"select a version first (in the table, the tree, the board or a plot) to {what}")
        return v

    def info(self, text: str) -> None:
        self.window.show_info(text)

    def error(self, text: str) -> None:
        self.window.show_error(text)


def needs(field: str) -> Callable[[dict[str, Any]], None]:
    """A SimpleFormDialog check: `field` must not be empty."""
    def check(values: dict[str, Any]) -> None:
        if not str(values.get(field, "")).strip():
            raise RelmanError(f"'{field}' is required")
    return check


def job_label(job: Any) -> str:
    if isinstance(job, int):
        return f"job {job}"
    if isinstance(job, dict) and "id" in job:
        return f"job {job['id']}"
    if isinstance(job, (list, tuple)):
        return ", ".join(job_label(j) for j in job)
    return str(job)
