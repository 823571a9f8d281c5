"""Archive / restore from the window: the selected version's blobs go to a folder on another
disk (its record stays) or come back, re-hashed. Both run as child `relman` processes, since
they copy and hash whole models."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QDialog, QLabel, QLineEdit

from relman.errors import RelmanError
from relman.ui.qt_dialogs import SimpleFormDialog, _path_row


def _folder_given(values: dict[str, Any]) -> None:
    if not values.get("Folder"):
        raise RelmanError("choose the folder (e.g. on another disk) that receives the version's files")


def archive_or_restore_selected(window: Any) -> Any:
    """The "Archive / restore…" action on the one selected version."""
    rows = window._selected_or_error("archive or restore it")
    if len(rows) != 1:
        raise RelmanError("select exactly one version to archive or restore")
    v = window.catalog.get_version(rows[0].id)
    if v.archived_to:
        dlg = SimpleFormDialog(f"Restore {v.ref}", [("", QLabel(
            f"Copy {v.ref}'s files back from {v.archived_to} into the catalog (each one is re-hashed)?"))],
            None, window)
        if window.dialog_runner(dlg) == QDialog.DialogCode.Accepted:
            return window.run_relman(f"Restore {v.ref}", ["restore", v.ref])
        return None
    if v.phase in ("staging", "production"):
        raise RelmanError(f"{v.ref} is in {v.phase}; only versions out of staging and production can be archived")
    folder = QLineEdit()
    folder.setObjectName("archive-folder")
    dlg = SimpleFormDialog(f"Archive {v.ref}", [("Folder", _path_row(folder, window, file=False))], None, window)
    dlg.fields["Folder"] = folder  # read the line edit, not the row around it
    dlg.check = _folder_given
    if window.dialog_runner(dlg) == QDialog.DialogCode.Accepted and dlg.result_values:
        return window.run_relman(f"Archive {v.ref}", ["archive", v.ref, "--to", dlg.result_values["Folder"]])
    return None
