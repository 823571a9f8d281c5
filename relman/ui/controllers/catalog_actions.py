"""Catalog housekeeping from the window: tags, delete, archive / restore, garbage collection.

Tags are small audited writes, done inline. Deleting (releasing blobs), archiving (copying a
version's blobs to another disk), restoring (copying them back, re-hashed) and collecting
garbage touch many files, so each is queued as a job (`relman.app.background`) and tracked:
the window says how it ended, and the disk view re-measures after garbage collection.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QLabel, QLineEdit

from relman.errors import RelmanError
from relman.ui.controllers import ActionSpec, Controller
from relman.ui.snapshot import VersionRow


def _folder_given(values: dict[str, Any]) -> None:
    if not values.get("Folder"):
        raise RelmanError("choose the folder (e.g. on another disk) that receives the version's files")


class CatalogActions(Controller):
    gc_job: int | None = None  # the confirmed gc's job (after its dry run and the confirmation)

    def actions(self) -> list[ActionSpec]:
        return [
            ActionSpec("tags", "Edit tags…", "Ctrl+Shift+T", self.edit_tags),
            ActionSpec("delete", "Delete version…", "Del", self.delete_selected),
            ActionSpec("archive", "Archive / restore…", "", self.archive_or_restore_selected),
            ActionSpec("gc", "Collect garbage", "", self.collect_garbage),
        ]

    def _one_selected(self, what: str) -> VersionRow:
        rows = self.selected_or_error(what)
        if len(rows) != 1:
            raise RelmanError(f"select exactly one version to {what}")
        return rows[0]

    # -- tags (inline) --------------------------------------------------------------------------------
    def edit_tags(self) -> dict[str, Any] | None:
        from relman.app.tags import tag_version, untag_version
        from relman.ui.qt_tags import TagsDialog

        v = self._one_selected("edit its tags")
        vals = self.run_dialog(TagsDialog(v.ref, self.catalog.tags(v.id), self.window))
        if vals is None:
            return None
        for name in vals["remove"]:
            untag_version(self.catalog, v.ref, name)
        for name in vals["add"]:
            tag_version(self.catalog, v.ref, name)
        self.window.refresh(force=True)
        return vals

    # -- delete (a job) ---------------------------------------------------------------------------------
    def delete_selected(self) -> int | None:
        from relman.app.housekeeping import delete_plan
        from relman.ui.qt_delete import DeleteDialog

        v = self._one_selected("delete it")
        plan = delete_plan(self.catalog, v.ref)
        vals = self.run_dialog(DeleteDialog(plan, self.window))
        if vals is None:
            return None
        return self.delete_version(plan["ref"], vals["why"])

    def delete_version(self, ref: str, why: str) -> int:
        from relman.app.background import queue_delete_version

        job = queue_delete_version(self.catalog, ref, why=why)

        def done(row: dict[str, Any]) -> None:
            r = row["result"]
            from relman.units import human_size

            self.info(f"Deleted {ref}: {human_size(r.get('freed_bytes', 0))} freed")
            self.window.refresh(force=True)
        return self.window.job_actions.track(job, f"Delete {ref}", done)

    # -- archive / restore (jobs) -----------------------------------------------------------------------
    def archive_or_restore_selected(self) -> int | None:
        """Archive the selected version to a folder, or restore it when it is archived."""
        from relman.ui.qt_dialogs import SimpleFormDialog, _path_row

        row = self._one_selected("archive or restore it")
        v = self.catalog.get_version(row.id)
        if v.archived_to:
            label = QLabel(f"Copy {v.ref}'s files back from {v.archived_to} into the catalog (each one is re-hashed)?")
            if self.run_dialog(SimpleFormDialog(f"Restore {v.ref}", [("", label)], None, self.window)) is None:
                return None
            return self.restore_version(v.ref)
        if v.phase in ("staging", "production"):
            raise RelmanError(f"{v.ref} is in {v.phase}; only versions out of staging and production can be archived")
        folder = QLineEdit()
        folder.setObjectName("archive-folder")
        dlg = SimpleFormDialog(f"Archive {v.ref}", [("Folder", _path_row(folder, self.window, file=False))], None,
                               self.window)
        dlg.fields["Folder"] = folder  # read the line edit, not the row around it
        dlg.check = _folder_given
        vals = self.run_dialog(dlg)
        return self.archive_version(v.ref, vals["Folder"]) if vals else None

    def archive_version(self, ref: str, folder: str) -> int:
        from relman.app.background import queue_archive_version

        job = queue_archive_version(self.catalog, ref, folder)

        def done(row: dict[str, Any]) -> None:
            self.info(f"Archived {ref} to {row['result'].get('to', folder)}")
            self.window.refresh(force=True)
        return self.window.job_actions.track(job, f"Archive {ref}", done)

    def restore_version(self, ref: str) -> int:
        from relman.app.background import queue_restore_version

        job = queue_restore_version(self.catalog, ref)

        def done(row: dict[str, Any]) -> None:
            self.info(f"Restored {ref} into the catalog")
            self.window.refresh(force=True)
        return self.window.job_actions.track(job, f"Restore {ref}", done)

    # -- garbage collection (a job) -----------------------------------------------------------------------
    def collect_garbage(self) -> int:
        """First a dry-run job counts what gc would remove; when it ends, a confirmation lists
        the counts and bytes, and only OK queues the real gc, whose end says what it removed."""
        from relman.app.background import queue_collect_garbage

        job = queue_collect_garbage(self.catalog, dry_run=True)
        return self.window.job_actions.track(job, "Garbage collection: counting", self._confirm_garbage)

    def _confirm_garbage(self, row: dict[str, Any]) -> None:
        from relman.app.housekeeping import garbage_found, garbage_summary
        from relman.units import human_size
        from relman.ui.qt_dialogs import SimpleFormDialog

        found = row["result"]
        if not garbage_found(found):
            self.info(f"Garbage collection: nothing to remove ({garbage_summary(found)})")
            return
        summary = QLabel(f"Removes {garbage_summary(found)}: {human_size(int(found.get('bytes_freed', 0)))} "
                         "in all. Versions, datasets and recent logs are kept.")
        summary.setObjectName("gc-summary")
        summary.setWordWrap(True)
        if self.run_dialog(SimpleFormDialog("Collect garbage", [("Will remove", summary)], None,
                                            self.window)) is None:
            self.info("Garbage collection cancelled; nothing removed")
            return
        self.gc_job = self._run_garbage_collection()

    def _run_garbage_collection(self) -> int:
        from relman.app.background import queue_collect_garbage

        job = queue_collect_garbage(self.catalog)

        def done(row: dict[str, Any]) -> None:
            from relman.app.housekeeping import garbage_summary
            from relman.units import human_size

            r = row["result"]
            self.info(f"Garbage collected: removed {garbage_summary(r)}; "
                      f"{human_size(r.get('bytes_freed', 0))} freed")
            self.window.refresh(force=True)
            disk = self.window.built_views().get("disk")
            if disk is not None:
                disk.refresh()
        return self.window.job_actions.track(job, "Collect garbage", done)
