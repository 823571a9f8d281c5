"""Issue 28, items 3 and 5: skipped is not passed, and the gate report shows its verdicts.

A policy whose every rule skips (nothing to compare with) used to give the untouched base a
green "✓ gates pass"; now the card wears a distinct amber badge ("no rule applied (0 of 2)"),
the Promote dialog (opened by the user's click) says nothing was checked, `relman gates` says
NOTHING CHECKED, and promoting to candidate says so. The report lists failures first with the
result in the first column and readable details (no JSON), and a skipped rule's reason reads
as a sentence ("digits-vit has no production version", not "is not has production")."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings  # noqa: E402

from ui_support import build_family  # noqa: E402

NOTHING_APPLIES = ["accuracy_delta_vs_production >= 0 when has_production", "latency_p95_ms <= parent.latency_p95_ms"]


@pytest.fixture
def family(catalog, tiny_vit):
    from relman.app.release import set_policy

    fam = build_family(catalog, tiny_vit)
    set_policy(catalog, "digits-vit", {"gates": {"candidate": NOTHING_APPLIES, "staging": [], "production": []}})
    return fam


def open_window(qtbot, catalog_path: Path, tmp_path: Path):
    from relman.ui.qt_main import MainWindow

    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat),
                   run_jobs=False)
    qtbot.addWidget(w)
    w.show()
    return w


def test_a_version_with_no_rule_applied_wears_no_pass_badge(qtbot, catalog, catalog_path, family, tmp_path):
    from relman.ui.qt_promote import PromoteDialog

    base = family["base"]
    w = open_window(qtbot, catalog_path, tmp_path)
    board = w.show_view("board")
    assert board.select_version(base.id)
    _, card = board.find_card(base.id)
    assert card.gate_state == "skipped", card.badge.text()
    assert "no rule applied (0 of 2)" in card.badge.text() and "pass" not in card.badge.text()
    assert "skipped is not passed" in board.gate_tip(w.snapshot.by_id()[base.id])
    seen = []

    def look(dialog):
        seen.append(dialog)
        dialog.reject()
        return dialog.result()
    w.dialog_runner = look
    board.promote_btn.click()
    dlg = seen[-1]
    assert isinstance(dlg, PromoteDialog) and dlg.nothing_checked
    assert "No rule applied (0 of 2)" in dlg.verdict.text() and "#b07d12" in dlg.verdict.styleSheet()
    results = [dlg.rules_table.item(r, 0).text() for r in range(dlg.rules_table.rowCount())]
    assert results == ["○ skipped", "○ skipped"]
    details = [dlg.rules_table.item(r, 2).text() for r in range(dlg.rules_table.rowCount())]
    assert any("digits-vit has no production version" in d for d in details), details
    assert not any("{" in d or "is not has" in d for d in details), details
    assert base.id in board.card_ids("draft")  # nothing moved: the user cancelled


def test_the_cli_says_nothing_was_checked(catalog, family, run_cli):
    base = family["base"]
    ref = f"digits-vit@{base.version}"
    out = run_cli("gates", ref, "--to", "candidate").output
    assert "NOTHING CHECKED: no rule applied (0 of 2)" in out and "skipped is not passed" in out
    promoted = run_cli("promote", ref, "--to", "candidate", "--why", "first look").output
    assert "no gate rule applied (0 of 2)" in promoted


def test_failures_come_first_with_readable_details(qtbot, catalog, catalog_path, family, tmp_path):
    from relman.app.release import gates, set_policy
    from relman.ui.qt_promote import PromoteDialog

    merged = family["merged"]  # accuracy 0.80
    set_policy(catalog, "digits-vit", {"gates": {"candidate": NOTHING_APPLIES + ["accuracy >= 0.85"],
                                                 "staging": [], "production": []}})
    report = gates(catalog, merged.id, "candidate", rehash=False)
    dlg = PromoteDialog(merged.ref, "draft", "candidate", report)
    qtbot.addWidget(dlg)
    assert dlg.rules_table.item(0, 1).text() == "accuracy >= 0.85" and "FAIL" in dlg.rules_table.item(0, 0).text()
    assert "0.8" in dlg.rules_table.item(0, 2).text() and "{" not in dlg.rules_table.item(0, 2).text()
    assert dlg.rules_table.horizontalHeaderItem(0).text() == "Result"
    assert report.applied_text() == "2 of 3 rules applied" and not report.nothing_checked  # merged has parents
