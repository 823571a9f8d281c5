"""Hooks view: the catalog's automations on release events (relman/release/hooks.py), with Add,
Test and Remove — what `relman hooks add|list|test|remove` do.

Adding and removing are small audited writes (like tags); a test run is queued as a job that
the window's runner starts and `job_actions.track` reports when it ends, so nothing here waits
on a hook. `track_hooks` is what the release actions call after a transition (or a refusal) so
that each hook it triggered is reported in the messages when its job ends.
"""

from __future__ import annotations

import shlex
from typing import Any, Mapping

from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout,
                               QHeaderView, QLabel, QLineEdit, QPushButton, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

from relman.errors import RelmanError
from relman.ui.qt_dialogs import ValidatingDialog

COLUMNS = ("ID", "Event", "Model", "To", "Does", "Timeout", "By")
ANY = "(every model)"
ANY_PHASE = "(any phase)"


def track_hooks(window: Any, result: Mapping[str, Any] | None) -> None:
    """Have the window report each hook job a transition queued (and any hook refused)."""
    if not result:
        return
    for line in result.get("hooks_refused", []):
        window.show_error(line)
    if result.get("hooks_error"):
        window.show_error(result["hooks_error"])
    for j in result.get("hook_jobs") or []:
        window.job_actions.track(int(j["job"]), f"Hook {j['hook']} ({j['what'][:50]})")


class AddHookDialog(ValidatingDialog):
    """Collects a hook: the event, the scope, and either a program (an argument list, split like
    a shell would split it but never run by one) or a URL to POST to."""

    def __init__(self, models: list[str], parent: QWidget | None = None) -> None:
        from relman.app.hooks import EVENTS
        from relman.release.policy import PHASES

        super().__init__("Add hook", parent)
        self.setObjectName("add-hook-dialog")
        self.on_event = QComboBox()
        self.on_event.addItems(list(EVENTS))
        self.model = QComboBox()
        self.model.addItems([ANY, *models])
        self.to_phase = QComboBox()
        self.to_phase.addItems([ANY_PHASE, *PHASES])
        self.kind = QComboBox()
        self.kind.addItems(["Run a program", "POST to a URL"])
        self.target = QLineEdit()
        self.target.setPlaceholderText("/usr/bin/python3 /srv/hooks/copy_onnx.py   or   http://127.0.0.1:8065/hook")
        self.timeout = QDoubleSpinBox()
        self.timeout.setRange(0.5, 3600.0)
        self.timeout.setValue(30.0)
        self.timeout.setSuffix(" s")
        self.allow_remote = QCheckBox("Allow a host other than this machine (POST only)")
        form = QFormLayout(self)
        form.addRow(QLabel("The JSON payload goes to the program's stdin (no shell) or is POSTed."))
        form.addRow("On", self.on_event)
        form.addRow("Model", self.model)
        form.addRow("Promoted to", self.to_phase)
        form.addRow("Action", self.kind)
        form.addRow("Program / URL", self.target)
        form.addRow("Timeout", self.timeout)
        form.addRow(self.allow_remote)
        form.addRow(self.error_label)
        form.addRow(self.buttons)

    def values(self) -> dict[str, Any]:
        text = self.target.text().strip()
        if not text:
            raise RelmanError("give the program to run (with its arguments) or the URL to POST to")
        post = self.kind.currentIndex() == 1
        argv: list[str] | None = None
        if not post:
            try:
                argv = shlex.split(text)
            except ValueError as e:
                raise RelmanError(f"cannot split the program line into arguments: {e}") from None
        return {"event": self.on_event.currentText(),
                "model": None if self.model.currentText() == ANY else self.model.currentText(),
                "to_phase": None if self.to_phase.currentText() == ANY_PHASE else self.to_phase.currentText(),
                "argv": argv, "url": text if post else None, "timeout_s": float(self.timeout.value()),
                "allow_remote": self.allow_remote.isChecked()}


class HooksView(QWidget):
    name = "hooks"
    title = "Hooks"

    def __init__(self, window: Any = None) -> None:
        super().__init__()
        self.window = window
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("hooks-table")
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.summary = QLabel("")
        self.summary.setObjectName("hint")
        self.add_btn = QPushButton("Add hook…")
        self.test_btn = QPushButton("Test")
        self.remove_btn = QPushButton("Remove")
        for b, slot in ((self.add_btn, self.request_add), (self.test_btn, self.request_test),
                        (self.remove_btn, self.request_remove)):
            b.clicked.connect(slot)
        buttons = QHBoxLayout()
        for b in (self.add_btn, self.test_btn, self.remove_btn):
            buttons.addWidget(b)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addLayout(buttons)
        layout.addWidget(self.table, 1)
        self.rows: list[dict[str, Any]] = []
        self.catalog: Any = None

    # -- drawing -------------------------------------------------------------------------------------
    def refresh(self, state: Any) -> None:
        from relman.app.hooks import describe, list_hooks

        self.catalog = state.catalog
        self.rows = list_hooks(state.catalog)
        self.table.setRowCount(len(self.rows))
        for r, h in enumerate(self.rows):
            values = [str(h["id"]), h["event"], h["model"] or ANY, h["to_phase"] or "", describe(h),
                      f"{h['timeout_s']:g} s", h["created_by"]]
            for c, text in enumerate(values):
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        self.summary.setText(f"{len(self.rows)} hook{'s' if len(self.rows) != 1 else ''}: each runs as a job after "
                             "its release event" if self.rows else
                             "No hooks yet: Add hook… runs a program or POSTs JSON when a version is promoted, "
                             "rolled back, rejected or refused.")
        has = bool(self.rows)
        self.test_btn.setEnabled(has)
        self.remove_btn.setEnabled(has)

    def apply_theme(self, dark: bool) -> None:
        pass  # the style sheet covers it

    def selected_hook(self) -> dict[str, Any]:
        row = self.table.currentRow()
        if row < 0 or row >= len(self.rows):
            raise RelmanError("select a hook first")
        return self.rows[row]

    # -- actions (through the window's action boundary: errors become messages) -----------------------
    def _catalog(self) -> Any:
        return self.window.catalog if self.window is not None else self.catalog

    def request_add(self) -> None:
        self.window.guarded("add hook", self._add)

    def _add(self) -> None:
        from relman.app.hooks import add_hook

        models = [r[0] for r in self._catalog().conn.execute("SELECT name FROM models ORDER BY name").fetchall()]
        dialog = AddHookDialog(models, self.window)
        vals = self.window.release.run_dialog(dialog, submit=lambda v: add_hook(self._catalog(), v["event"], **{
            k: v[k] for k in ("argv", "url", "model", "to_phase", "timeout_s", "allow_remote")}))
        if vals is not None:
            hook = dialog.submitted
            self.window.show_info(f"hook {hook['id']} added (on {hook['event']})")
            self.window.refresh(force=True)

    def request_test(self) -> None:
        self.window.guarded("test hook", self._test)

    def _test(self) -> None:
        from relman.app.hooks import describe, queue_test

        hook = self.selected_hook()
        job = queue_test(self._catalog(), hook["id"])
        self.window.job_actions.track(job, f"Test of hook {hook['id']} ({describe(hook)[:50]})")
        self.window.refresh(force=True)

    def request_remove(self) -> None:
        self.window.guarded("remove hook", self._remove)

    def _remove(self) -> None:
        from relman.app.hooks import remove_hook

        hook = self.selected_hook()
        remove_hook(self._catalog(), hook["id"])
        self.window.show_info(f"hook {hook['id']} removed")
        self.window.refresh(force=True)
