"""Quitting with jobs unfinished: ask, instead of quitting silently.

Jobs run in worker processes of their own, and queued ones are started by the stand-by runner
(relman.ui.runner_standby) once the window is gone, so leaving them is safe — but a user who
presses Ctrl+Q (or closes the window) while a fine-tune runs may not know that, or may want
them stopped. The question offers the three answers: leave them running in the background
(and say who runs the queued ones), cancel them and quit, or stay. Asked only when the user
closes the window (Ctrl+Q, the window's close button), never on a programmatic close."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QMessageBox, QPushButton

KEEP, CANCEL, STAY = "keep", "cancel", "stay"


def unfinished_jobs(catalog: Any) -> dict[str, list[int]]:
    """The ids of the catalog's running and queued jobs ({} when there are none)."""
    try:
        rows = catalog.conn.execute(
            "SELECT status, id FROM jobs WHERE status IN ('running', 'queued') ORDER BY id").fetchall()
    except Exception:  # noqa: BLE001 - a vanished catalog: nothing to ask about
        return {}
    out: dict[str, list[int]] = {}
    for status, job_id in rows:
        out.setdefault(status, []).append(int(job_id))
    return out


def question_text(jobs: dict[str, list[int]], note: str) -> str:
    """'2 jobs are running and 1 is queued.' plus where they continue if left."""
    running, queued = len(jobs.get("running", [])), len(jobs.get("queued", []))
    parts = []
    if running:
        parts.append(f"{running} job{'s are' if running != 1 else ' is'} running")
    if queued:
        parts.append(f"{queued} {'are' if queued != 1 else 'is'} queued" if running else
                     f"{queued} job{'s are' if queued != 1 else ' is'} queued")
    text = " and ".join(parts) + "."
    if note:
        text += f"\n\nIf you leave them: {note}"
    return text


class QuitQuestion(QMessageBox):
    """Leave the jobs running and quit / cancel them and quit / stay (the default)."""

    def __init__(self, jobs: dict[str, list[int]], note: str, parent: Any = None) -> None:
        super().__init__(QMessageBox.Icon.Question, "Quit relman?", question_text(jobs, note),
                         QMessageBox.StandardButton.NoButton, parent)
        self.setObjectName("quit-with-jobs")
        self.keep_btn: QPushButton = self.addButton("Keep them running and quit", QMessageBox.ButtonRole.AcceptRole)
        self.cancel_btn: QPushButton = self.addButton("Cancel them and quit", QMessageBox.ButtonRole.DestructiveRole)
        self.stay_btn: QPushButton = self.addButton("Stay", QMessageBox.ButtonRole.RejectRole)
        self.keep_btn.setObjectName("quit-keep-jobs")
        self.cancel_btn.setObjectName("quit-cancel-jobs")
        self.stay_btn.setObjectName("quit-stay")
        self.setDefaultButton(self.stay_btn)
        self.setEscapeButton(self.stay_btn)

    def answer(self) -> str:
        clicked = self.clickedButton()
        return KEEP if clicked is self.keep_btn else CANCEL if clicked is self.cancel_btn else STAY


def confirm_quit(window: Any) -> bool:
    """Ask about unfinished jobs; True when the window may close (after cancelling the jobs
    where that was the answer)."""
    jobs = unfinished_jobs(window.catalog)
    if not jobs:
        return True
    box = QuitQuestion(jobs, window.job_actions.closing_note(), window)
    box.exec()
    answer = box.answer()
    if answer == STAY:
        return False
    if answer == CANCEL:
        from relman.app.jobs import cancel_job
        from relman.errors import RelmanError

        for job_id in jobs.get("running", []) + jobs.get("queued", []):
            try:
                cancel_job(window.catalog, job_id)
            except RelmanError:  # it ended meanwhile
                pass
        window.messages_log.info(f"Cancelled {sum(len(v) for v in jobs.values())} unfinished job(s) on quitting")
    return True
