"""Issue 28, item 10: the Jobs view with real jobs in real worker processes, acted on as a user.

- A retried job's live curve shows the current attempt only (it joined both attempts: the line
  jumped back to step 0); job_points records the attempt that drew each point (m010).
- A failed job shows its one-line error inline in the Jobs view, with its cause and the
  traceback behind "Details"; no message box to dismiss.
- Retry is enabled only where running the job again can help (out of memory: yes; bad input,
  a bug: no, with a tooltip saying why).
- Ctrl+Q with a job running asks: stay / keep them running and quit / cancel them and quit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings, Qt, QTimer  # noqa: E402

pytestmark = pytest.mark.heavy  # real worker processes


def make_window(qtbot: Any, catalog_path: Path, tmp_path: Path, cpu_slots: int = 2) -> Any:
    from relman.ui.qt_main import MainWindow

    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat),
                   run_jobs=True, cpu_slots=cpu_slots, poll_ms=150, runner_ms=150)
    qtbot.addWidget(w)
    w.show()
    return w


def job_row(catalog: Any, job_id: int) -> dict[str, Any]:
    return catalog.query("SELECT * FROM jobs WHERE id = ?", [job_id])[0]


def finish_all(catalog: Any, qtbot: Any) -> None:
    """Cancel what is left and wait until the workers have ended it (their own cancel check)."""
    from relman.app.jobs import cancel_job

    for (job_id,) in catalog.conn.execute("SELECT id FROM jobs WHERE status IN ('queued', 'running')").fetchall():
        try:
            cancel_job(catalog, job_id)
        except Exception:  # noqa: BLE001 - it ended meanwhile
            pass
    qtbot.waitUntil(lambda: catalog.conn.execute(
        "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')").fetchone()[0] == 0, timeout=60_000)


def curve_points(jobs_view: Any) -> dict[str, int]:
    return {name: len(c.getData()[0] if c.getData()[0] is not None else []) for name, c in jobs_view.curves.items()}


def test_a_retried_jobs_curve_shows_the_current_attempt_only(qtbot, catalog, catalog_path, tmp_path, monkeypatch):
    from relman.app.jobs import queue_job
    from relman.jobs.testing import HoldPoint

    hold = HoldPoint(monkeypatch, "sleep.end", tmp_path)
    job_id = queue_job(catalog, "sleep", {"seconds": 0.5, "steps": 5, "curve": True}, device="cpu")
    w = make_window(qtbot, catalog_path, tmp_path)
    try:
        jobs = w.show_view("jobs")
        jobs.select_job(job_id)
        # attempt 1 draws 5 points per series, then holds
        qtbot.waitUntil(lambda: curve_points(jobs) == {"train_loss": 5, "eval_loss": 5}, timeout=90_000)
        assert "attempt" not in jobs.curve_plot.plotItem.titleLabel.text
        qtbot.waitUntil(lambda: jobs.cancel_btn.isEnabled(), timeout=10_000)
        qtbot.mouseClick(jobs.cancel_btn, Qt.MouseButton.LeftButton)  # the user cancels it…
        qtbot.waitUntil(lambda: (jobs.job(job_id) or {}).get("status") == "cancelled", timeout=60_000)
        qtbot.waitUntil(lambda: jobs.retry_btn.isEnabled(), timeout=10_000)
        qtbot.mouseClick(jobs.retry_btn, Qt.MouseButton.LeftButton)  # …and retries it
        qtbot.waitUntil(lambda: (jobs.job(job_id) or {}).get("status") in ("queued", "running"), timeout=10_000)
        # queued again, the next attempt has drawn nothing: no old curve stands in for it
        qtbot.waitUntil(lambda: job_row(catalog, job_id)["attempts"] == 2 and job_row(catalog, job_id)["message"]
                        == hold.message(), timeout=90_000)
        qtbot.waitUntil(lambda: curve_points(jobs) == {"train_loss": 5, "eval_loss": 5} and jobs.drawn_attempt == 2,
                        timeout=30_000)
        assert "attempt 2 (earlier attempts not drawn)" in jobs.curve_plot.plotItem.titleLabel.text
        per_attempt = dict(catalog.conn.execute(
            "SELECT attempt, COUNT(*) FROM job_points WHERE job_id = ? GROUP BY attempt", [job_id]).fetchall())
        assert per_attempt == {1: 10, 2: 10}  # both attempts are kept; only the current one is drawn
        xs = sorted(jobs.curves["train_loss"].getData()[0])
        assert xs == [0, 1, 2, 3, 4]  # one run of steps, not 0..4 twice
        hold.release()
        qtbot.waitUntil(lambda: job_row(catalog, job_id)["status"] == "succeeded", timeout=60_000)
    finally:
        hold.release()
        finish_all(catalog, qtbot)
        w.shutdown()


def test_a_failure_is_shown_inline_and_retry_only_where_it_helps(qtbot, catalog, catalog_path, tmp_path):
    from relman.app.jobs import queue_job

    w = make_window(qtbot, catalog_path, tmp_path)
    try:
        jobs = w.show_view("jobs")
        bad = queue_job(catalog, "fail", {"error": "relman", "message": "column 'txt' is not in data.csv\n"
                                                                        "(second line: only in the log)"},
                        device="cpu")
        oom = queue_job(catalog, "fail", {"error": "memory", "message": "could not allocate 12 GiB"}, device="cpu")
        w.job_actions.track(bad, "Import data.csv")  # as the window's own actions track what they queue
        w.job_actions.track(oom, "Fine-tune spam")
        qtbot.waitUntil(lambda: all(job_row(catalog, j)["status"] == "failed" for j in (bad, oom)), timeout=90_000)
        qtbot.waitUntil(lambda: not w.job_actions.tracked, timeout=30_000)
        assert not w.open_boxes, "a failed job opens no message box"
        errors = [text for level, text in w.messages if level == "error"]
        assert any("Import data.csv failed: column 'txt' is not in data.csv" in t for t in errors), errors
        # the user selects the bad-input job: its one-line error is inline, with its cause
        jobs.select_job(bad)
        qtbot.waitUntil(lambda: jobs.failure.isVisible() and jobs.failure.job_id == bad, timeout=10_000)
        line = jobs.failure.text.text()
        assert line == f"✗ Job {bad} failed (bad input): column 'txt' is not in data.csv", line
        assert "Traceback" not in line and not jobs.failure.details.isVisible()
        # the traceback is behind Details
        qtbot.mouseClick(jobs.failure.details_btn, Qt.MouseButton.LeftButton)
        assert jobs.failure.details.isVisible() and jobs.failure.details_btn.text() == "Hide details"
        details = jobs.failure.details.toPlainText()
        assert details.startswith("Traceback (most recent call last):") and "RelmanError" in details, details
        assert "(second line: only in the log)" in details
        # retrying bad input cannot help: disabled, and the tooltip says why
        assert not jobs.retry_btn.isEnabled()
        assert "Retrying cannot help" in jobs.retry_btn.toolTip() and "bad input" in jobs.retry_btn.toolTip()
        # out of memory may pass on a second try: Retry is offered; the panel follows the selection
        jobs.select_job(oom)
        qtbot.waitUntil(lambda: jobs.failure.job_id == oom, timeout=10_000)
        assert "(out of memory): MemoryError: could not allocate 12 GiB" in jobs.failure.text.text()
        assert not jobs.failure.details.isVisible()  # another job: details closed again
        assert jobs.retry_btn.isEnabled() and "out of memory" in jobs.retry_btn.toolTip()
    finally:
        finish_all(catalog, qtbot)
        w.shutdown()


def answer_quit_question(qtbot: Any, button: str, seen: list[str]) -> Callable[[], None]:
    """Click `button` ('quit-stay', 'quit-keep-jobs', 'quit-cancel-jobs') in the question once it is up."""
    from PySide6.QtWidgets import QApplication, QPushButton

    def answer() -> None:
        box = QApplication.activeModalWidget()
        if box is None or box.objectName() != "quit-with-jobs":
            QTimer.singleShot(20, answer)
            return
        seen.append(box.text())  # type: ignore[attr-defined]
        qtbot.mouseClick(box.findChild(QPushButton, button), Qt.MouseButton.LeftButton)
    return answer


def press_ctrl_q(qtbot: Any, w: Any) -> None:
    from PySide6.QtWidgets import QApplication

    w.activateWindow()  # a shortcut reaches the active window (after a dialog, once it is active again)
    qtbot.waitUntil(lambda: QApplication.activeWindow() is w, timeout=5_000)
    qtbot.keyClick(w, Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)


def test_ctrl_q_with_a_running_job_asks(qtbot, catalog, catalog_path, tmp_path):
    from relman.app.jobs import queue_job

    job_id = queue_job(catalog, "sleep", {"seconds": 300, "steps": 3000}, device="cpu")
    w = make_window(qtbot, catalog_path, tmp_path)
    try:
        qtbot.waitUntil(lambda: job_row(catalog, job_id)["status"] == "running", timeout=90_000)
        seen: list[str] = []
        QTimer.singleShot(0, answer_quit_question(qtbot, "quit-stay", seen))
        press_ctrl_q(qtbot, w)
        assert seen and seen[0].startswith("1 job is running.") and "keeps running" in seen[0], seen
        assert w.isVisible() and job_row(catalog, job_id)["status"] == "running"  # stayed
        QTimer.singleShot(0, answer_quit_question(qtbot, "quit-cancel-jobs", seen))
        press_ctrl_q(qtbot, w)
        assert len(seen) == 2 and not w.isVisible()
        assert job_row(catalog, job_id)["cancel_requested"] == 1
        qtbot.waitUntil(lambda: job_row(catalog, job_id)["status"] == "cancelled", timeout=60_000)
    finally:
        finish_all(catalog, qtbot)
        w.shutdown()
        w.job_actions.release_standby()


def test_ctrl_q_can_leave_jobs_running_in_the_background(qtbot, catalog, catalog_path, tmp_path):
    from relman.app.jobs import queue_job

    job_id = queue_job(catalog, "sleep", {"seconds": 300, "steps": 3000}, device="cpu")
    w = make_window(qtbot, catalog_path, tmp_path)
    try:
        qtbot.waitUntil(lambda: job_row(catalog, job_id)["status"] == "running", timeout=90_000)
        seen: list[str] = []
        QTimer.singleShot(0, answer_quit_question(qtbot, "quit-keep-jobs", seen))
        press_ctrl_q(qtbot, w)
        assert seen and not w.isVisible()
        row = job_row(catalog, job_id)
        assert row["status"] == "running" and not row["cancel_requested"]  # it goes on without the window
        assert any("keeps running in its worker process" in text for _, text in w.messages), w.messages
        # a programmatic close (not the user's) asks nothing: a second window closes at once
        w2 = make_window(qtbot, catalog_path, tmp_path / "second")
        w2.close()
        assert not w2.isVisible()
    finally:
        finish_all(catalog, qtbot)
        w.shutdown()
