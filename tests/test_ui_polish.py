"""Polish (issue 28, item 12), driven as a user would: check boxes and the focus ring are
visible in the dark theme; a success in a dialog is green, not the error red; the rollback
confirmation and its result name the version that returns to production; the canary dialog
asks for a reason, which the audit event carries; gc first shows what it will remove (counts
and bytes), then what it removed. pytest-qt, offscreen."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtGui import QColor, QImage  # noqa: E402
from PySide6.QtWidgets import QCheckBox, QDialogButtonBox, QLineEdit, QVBoxLayout, QWidget  # noqa: E402

from housekeeping_support import planted_version  # noqa: E402
from ui_support import accept_with  # noqa: E402

OPEN_POLICY = {"gates": {"candidate": [], "staging": [], "production": []}, "approvals": {},
               "verify_artifacts": []}


def _luminance(c: QColor) -> float:
    def ch(v: float) -> float:
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4
    return 0.2126 * ch(c.redF()) + 0.7152 * ch(c.greenF()) + 0.0722 * ch(c.blueF())


def contrast(a: QColor, b: QColor) -> float:
    """WCAG contrast ratio (1 = invisible, 3 = the minimum for controls)."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def strongest_contrast(img: QImage, background: QColor, x_max: int, min_pixels: int = 12) -> float:
    """The best contrast against `background` of a colour that covers at least `min_pixels`
    pixels in the image's left `x_max` columns (anti-aliasing specks do not count)."""
    counts: dict[int, int] = {}
    for x in range(min(x_max, img.width())):
        for y in range(img.height()):
            rgb = img.pixel(x, y)
            counts[rgb] = counts.get(rgb, 0) + 1
    return max((contrast(QColor.fromRgb(rgb), background) for rgb, n in counts.items() if n >= min_pixels),
               default=1.0)


@pytest.fixture
def window(qtbot, catalog_path, tmp_path: Path):
    from relman.ui.qt_main import MainWindow

    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat),
                   run_jobs=False)
    qtbot.addWidget(w)
    w.show()
    yield w
    w.shutdown()


def test_dark_theme_checkboxes_and_focus_ring_are_visible(window, qtbot):
    qtbot.keyClick(window, "t", modifier=Qt.KeyboardModifier.ControlModifier)  # View → Toggle dark theme
    assert window.dark
    background = QColor("#1e2128")
    host = QWidget()
    qtbot.addWidget(host)
    lay = QVBoxLayout(host)
    unchecked, checked, edit, other = QCheckBox("unchecked"), QCheckBox("checked"), QLineEdit(), QLineEdit()
    checked.setChecked(True)
    for w in (unchecked, checked, edit, other):
        lay.addWidget(w)
    host.show()
    qtbot.waitExposed(host)
    other.setFocus()
    qtbot.waitUntil(other.hasFocus)
    box_off, box_on = unchecked.grab().toImage(), checked.grab().toImage()
    assert strongest_contrast(box_off, background, 22) >= 3.0  # the empty box stands out of the field
    assert strongest_contrast(box_on, background, 22) >= 3.0
    assert box_off.copy(0, 0, 22, box_off.height()) != box_on.copy(0, 0, 22, box_on.height())  # ticked ≠ empty
    before = edit.grab().toImage()
    edit.setFocus()
    qtbot.waitUntil(edit.hasFocus)
    after = edit.grab().toImage()
    ring = after.pixelColor(0, after.height() // 2)
    assert after != before and contrast(ring, QColor("#2b2f39")) >= 3.0, ring.name()  # an accent ring, on the edge


def test_a_key_made_in_the_approve_dialog_is_reported_in_green(qtbot, catalog):
    from relman.ui.qt_dialogs import ERROR_COLOR, SUCCESS_COLOR
    from relman.ui.qt_signing import SignedApproveDialog

    d = SignedApproveDialog("m@1.0.0", "staging", "alice")
    qtbot.addWidget(d)
    d.show()
    qtbot.keyClicks(d.new_key_edit, "release-key")
    d.create_key()
    assert "created key release-key" in d.error_label.text()
    assert SUCCESS_COLOR in d.error_label.styleSheet() and ERROR_COLOR not in d.error_label.styleSheet()
    d.new_key_edit.setText("release-key")  # the same name again: a refusal, in red
    d.create_key()
    assert ERROR_COLOR in d.error_label.styleSheet() and "created" not in d.error_label.text()


@pytest.fixture
def released(catalog, tmp_path):
    """m@a then m@b in production (policy without gates), c in staging."""
    from relman.app.release import promote, set_policy

    vs = {k: planted_version(catalog, tmp_path, "m", k, shared=b"S" * 100, unique=k.encode() * 50)
          for k in ("a", "b", "c")}
    set_policy(catalog, "m", OPEN_POLICY)
    for k, phases in (("a", ("candidate", "staging", "production")), ("b", ("candidate", "staging", "production")),
                      ("c", ("candidate", "staging"))):
        for ph in phases:
            promote(catalog, vs[k].ref, ph, why="test")
    return vs


def test_rollback_confirmation_and_result_name_the_version_that_returns(window, released, catalog, qtbot):
    a, b = released["a"], released["b"]
    seen: dict[str, str] = {}

    def fill(d: Any) -> None:
        seen["title"] = d.windowTitle()
        seen["summary"] = d.fields["What happens"].text()
        d.fields["Reason"].setPlainText("latency regression")

    window.refresh(force=True)
    window.set_selection([b.id])
    window.dialog_runner = accept_with(fill)
    window.actions_by_key["rollback"].trigger()
    assert a.ref in seen["title"]
    assert seen["summary"].startswith(f"{a.ref} returns to production") and f"{b.ref} leaves production" in seen["summary"]
    assert "retired" in seen["summary"]
    assert catalog.get_version(a.id).phase == "production" and catalog.get_version(b.id).phase == "retired"
    assert window.messages[-1][0] == "info" and f"{a.ref} is back in production" in window.messages[-1][1]


def test_rollback_with_nothing_to_return_says_so_before_any_dialog(window, catalog, tmp_path, qtbot):
    from relman.app.release import promote, set_policy

    only = planted_version(catalog, tmp_path, "solo", "a", shared=b"S" * 10, unique=b"A" * 10)
    set_policy(catalog, "solo", OPEN_POLICY)
    for ph in ("candidate", "staging", "production"):
        promote(catalog, only.ref, ph)
    window.refresh(force=True)
    window.set_selection([only.id])
    dialogs: list[Any] = []
    window.dialog_runner = lambda d: (dialogs.append(d), 0)[1]
    window.actions_by_key["rollback"].trigger()
    assert dialogs == [] and window.messages[-1][0] == "error"
    assert "nothing to roll back to" in window.messages[-1][1]
    assert catalog.get_version(only.id).phase == "production"


def test_canary_dialog_asks_for_a_reason_and_the_audit_event_carries_it(window, released, catalog, qtbot):
    c = released["c"]
    window.refresh(force=True)
    tried: list[str] = []

    def no_reason_then_reason(d: Any) -> int:
        d.fields["Share"].setValue(25.0)
        d.buttons.button(QDialogButtonBox.StandardButton.Ok).click()  # no reason: refused in the dialog
        tried.append(d.error_label.text())
        qtbot.keyClicks(d.fields["Reason"], "first 25 % of EU traffic")
        d.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
        return d.result()

    window.dialog_runner = no_reason_then_reason
    window.show_view("board")
    assert window.board.select_version(c.id) and window.board.rollout_btn.isEnabled()
    window.board.rollout_btn.click()
    assert tried and "Reason" in tried[0]
    assert catalog.get_version(c.id).canary_share == 25.0
    (event,) = [e for e in catalog.events() if e["kind"] == "rollout"]
    payload = event["payload"] if isinstance(event["payload"], dict) else json.loads(event["payload"])
    assert payload["why"] == "first 25 % of EU traffic" and payload["share"] == 25.0


@pytest.mark.heavy  # the dry run and gc are jobs: worker processes
def test_gc_shows_what_it_will_remove_then_what_it_removed(qtbot, catalog_path, catalog, tmp_path):
    from relman.app.housekeeping import delete_version
    from relman.ui.qt_main import MainWindow

    keep = planted_version(catalog, tmp_path, "g", "keep", shared=b"S" * 1000, unique=b"K" * 1000)
    gone = planted_version(catalog, tmp_path, "g", "gone", shared=b"S" * 1000, unique=b"G" * 3000)
    delete_version(catalog, gone.ref, why="superseded", release=False)  # its own 3000-byte blob: garbage
    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat),
                   run_jobs=True, cpu_slots=1, poll_ms=200, runner_ms=150)
    qtbot.addWidget(w)
    w.show()
    try:
        seen: list[str] = []
        w.dialog_runner = accept_with(lambda d: seen.append(d.fields["Will remove"].text()))
        w.actions_by_key["gc"].trigger()
        qtbot.waitUntil(lambda: any("Garbage collected" in m[1] for m in w.messages), timeout=90_000)
        assert len(seen) == 1 and "1 unreferenced blob (2.9 KB)" in seen[0], seen
        done = next(m[1] for m in w.messages if "Garbage collected" in m[1])
        assert "removed 1 unreferenced blob (2.9 KB)" in done and "2.9 KB freed" in done, done
        assert catalog.verify_store() == [] and catalog.get_version(keep.id).phase
        w.actions_by_key["gc"].trigger()  # again: the dry run finds nothing, no dialog
        qtbot.waitUntil(lambda: any("nothing to remove" in m[1] for m in w.messages), timeout=90_000)
        assert len(seen) == 1
    finally:
        w.shutdown()
