"""Releasing from the GUI on a real catalog: promote by button and by drag-and-drop, gate
refusal and override (recorded), approvals, canary share and rollback from the board."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QPointF, QSettings, Qt  # noqa: E402
from PySide6.QtGui import QDropEvent  # noqa: E402
from PySide6.QtWidgets import QDialogButtonBox  # noqa: E402

from ui_support import build_family  # noqa: E402


class Reviewer:
    """Drives the window's dialogs like a user would: fills them, presses OK, and records
    what each dialog showed."""

    def __init__(self, reason: str = "looks good", override: bool = False, share: float = 100.0) -> None:
        self.reason, self.override, self.share = reason, override, share
        self.seen: list[Any] = []
        self.results: list[int] = []

    def __call__(self, dialog: Any) -> int:
        from relman.ui.qt_dialogs import SimpleFormDialog
        from relman.ui.qt_promote import PromoteDialog

        self.seen.append(dialog)
        if isinstance(dialog, PromoteDialog):
            dialog.reason.setPlainText(self.reason)
            dialog.override.setChecked(self.override)
        elif isinstance(dialog, SimpleFormDialog):
            for label, w in dialog.fields.items():
                if label == "Reason":
                    w.setPlainText(self.reason)
                elif label == "Share":
                    w.setValue(self.share)
                elif label == "Comment":
                    w.setText("reviewed in a test")
        dialog.accept()
        self.results.append(dialog.result())
        return dialog.result()


@pytest.fixture
def family(catalog, tiny_vit):
    from relman.app.release import set_policy

    fam = build_family(catalog, tiny_vit)
    set_policy(catalog, "digits-vit", {"gates": {"candidate": ["accuracy >= 0.85"], "staging": [],
                                                 "production": ["canary_share >= 100"]}})
    return fam


@pytest.fixture
def window(qtbot, catalog_path, family, tmp_path: Path):
    from relman.ui.qt_main import MainWindow

    # jobs run: promotions that re-hash artifacts (staging, production) are "promote" jobs
    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat),
                   run_jobs=True, cpu_slots=1, poll_ms=200, runner_ms=150)
    qtbot.addWidget(w)
    w.show()
    w.tabs.setCurrentIndex(1)
    yield w
    w.shutdown()


def drop_on(window: Any, version_id: int, phase: str) -> None:
    """What a drag of a card onto a column delivers: the source column's mime data, dropped."""
    board = window.board
    src_phase, _ = board.find_card(version_id)
    src = board.columns[src_phase]
    item = next(src.item(i) for i in range(src.count()) if src.item(i).data(Qt.ItemDataRole.UserRole) == version_id)
    mime = src.mimeData([item])
    target = board.columns[phase]
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.MoveAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    target.dropEvent(event)


def phase_of(catalog: Any, version_id: int) -> str:
    return catalog.get_version(version_id).phase


def test_promote_by_button_shows_passing_gates(window, family, catalog):
    base = family["base"]
    reviewer = Reviewer("accuracy fine")
    window.dialog_runner = reviewer
    _, card = window.board.find_card(base.id)
    assert card.gate_state == "pass" and "candidate" in card.badge.text()
    assert window.board.select_version(base.id)
    assert window.board.promote_btn.isEnabled() and "candidate" in window.board.promote_btn.text()
    window.board.promote_btn.click()
    dlg = reviewer.seen[-1]
    assert dlg.passed is True and "All gates pass" in dlg.verdict.text()
    assert any("accuracy >= 0.85" in dlg.rules_table.item(r, 1).text() for r in range(dlg.rules_table.rowCount()))
    assert phase_of(catalog, base.id) == "candidate"
    assert base.id in window.board.card_ids("candidate")
    row = catalog.query("SELECT why, override FROM transitions WHERE version_id = ? ORDER BY id DESC", [base.id])[0]
    assert row == {"why": "accuracy fine", "override": 0}
    assert window.messages[-1][0] == "info"


def test_drag_with_failing_gates_is_refused_then_overridden_with_a_reason(window, family, catalog):
    merged = family["merged"]  # accuracy 0.80 < 0.85
    _, card = window.board.find_card(merged.id)
    assert card.gate_state == "fail" and "FAIL" in card.badge.text()
    # 1. dropped on Candidate, reviewer presses OK without overriding: refused, nothing changes
    refuse = Reviewer("ship it")
    window.dialog_runner = refuse
    drop_on(window, merged.id, "candidate")
    dlg = refuse.seen[-1]
    assert dlg.passed is False and "FAIL" in dlg.verdict.text()
    assert not dlg.buttons.button(QDialogButtonBox.StandardButton.Ok).isEnabled()
    assert refuse.results[-1] == 0 and "gates fail" in dlg.error_label.text()
    failing = [dlg.rules_table.item(r, 1).text() for r in range(dlg.rules_table.rowCount())
               if "FAIL" in dlg.rules_table.item(r, 0).text()]
    assert failing == ["accuracy >= 0.85"]
    assert failing == [dlg.rules_table.item(0, 1).text()]  # failures first, the verdict in the first column
    assert phase_of(catalog, merged.id) == "draft" and merged.id in window.board.card_ids("draft")
    # 2. override without a reason: still refused
    silent = Reviewer("", override=True)
    window.dialog_runner = silent
    drop_on(window, merged.id, "candidate")
    assert silent.results[-1] == 0 and "needs a reason" in silent.seen[-1].error_label.text()
    assert phase_of(catalog, merged.id) == "draft"
    # 3. override with a reason: promoted, and the override is on record
    window.dialog_runner = Reviewer("needed for the merge experiment", override=True)
    drop_on(window, merged.id, "candidate")
    assert phase_of(catalog, merged.id) == "candidate"
    assert merged.id in window.board.card_ids("candidate")
    t = catalog.query("SELECT why, override FROM transitions WHERE version_id = ?", [merged.id])[-1]
    assert t == {"why": "needed for the merge experiment", "override": 1}
    assert any(e["kind"] == "override" for e in catalog.events())
    assert "(gates overridden)" in window.messages[-1][1]


def test_release_error_from_the_api_is_shown_not_raised(window, family, catalog):
    # draft → production is not an allowed transition: the dialog says so, the API refuses
    window.dialog_runner = Reviewer("skip ahead", override=True)
    drop_on(window, family["pruned"].id, "production")
    assert window.messages[-1][0] == "error" and "does not allow" in window.messages[-1][1]
    assert phase_of(catalog, family["pruned"].id) == "draft"


def _promote_and_wait(window: Any, qtbot: Any) -> None:
    """Press Promote; a promotion that re-hashes artifacts is a job: wait until it ended."""
    window.board.promote_btn.click()
    qtbot.waitUntil(lambda: not window.busy(), timeout=90_000)


def _to_production(window: Any, qtbot: Any, catalog: Any, version_id: int) -> None:
    board = window.board
    window.dialog_runner = Reviewer("release step")
    for to in ("candidate", "staging"):
        if to == "staging":
            assert board.select_version(version_id)
            board.approve_btn.click()  # approval dialog → release.approve
            assert catalog.query("SELECT by FROM approvals WHERE version_id = ? AND to_phase = 'staging'",
                                 [version_id]) == [{"by": "tester"}]
        assert board.select_version(version_id)
        _promote_and_wait(window, qtbot)
        assert phase_of(catalog, version_id) == to, window.messages[-1]
    assert board.select_version(version_id)
    board.approve_btn.click()
    _, card = board.find_card(version_id)
    assert card.gate_state == "fail"  # canary share 0 < 100
    assert board.select_version(version_id)
    assert board.rollout_btn.isEnabled()
    board.rollout_btn.click()  # canary share dialog → release.rollout(100)
    assert catalog.get_version(version_id).canary_share == 100
    _, card = board.find_card(version_id)
    assert card.gate_state == "pass"
    assert board.select_version(version_id)
    _promote_and_wait(window, qtbot)
    assert phase_of(catalog, version_id) == "production", window.messages[-1]
    assert any(j["kind"] == "promote" for j in catalog.query("SELECT kind FROM jobs"))


def test_full_release_then_rollback_from_the_board(window, family, catalog, qtbot):
    base, pruned = family["base"], family["pruned"]
    _to_production(window, qtbot, catalog, base.id)
    assert window.board.card_ids("production") == [base.id]
    assert window.compare.size_panel.prod_item.data["data"].tolist() == [base.id]  # production star
    _to_production(window, qtbot, catalog, pruned.id)
    assert window.board.card_ids("production") == [pruned.id]
    assert base.id in window.board.card_ids("retired")
    assert window.board.rollback_btn.isEnabled()
    window.dialog_runner = Reviewer("latency regression in prod")
    window.board.rollback_btn.click()
    assert phase_of(catalog, base.id) == "production" and phase_of(catalog, pruned.id) == "retired"
    assert window.board.card_ids("production") == [base.id]
    assert pruned.id in window.board.card_ids("retired")
    phase_col = [window.versions.model.columns[c][0] for c in range(window.versions.model.columnCount())].index("Phase")
    phases = {window.versions.model.rows[r].id: window.versions.model.index(r, phase_col).data()
              for r in range(window.versions.model.rowCount())}
    assert phases[base.id] == "production" and phases[pruned.id] == "retired"
    assert any(e["kind"] == "rollback" for e in catalog.events())
    assert window.audit.verify()[0]
