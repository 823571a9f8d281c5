"""GUI parts of tamper evidence: the audit view names a forged row; the approve dialog
creates a key and signs (relman/ui/qt_signing.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")

from test_signed_approvals import _version, keydir  # noqa: E402,F401
from test_tamper import _attacker, world  # noqa: E402,F401


def test_gui_audit_view_names_a_forged_row(world, catalog, qtbot):
    from relman.ui.qt_audit import AuditView

    view = AuditView()
    qtbot.addWidget(view)
    view.catalog = catalog
    assert view.verify()[0] is True
    conn = _attacker(catalog)
    conn.execute("UPDATE versions SET phase = 'production' WHERE id = ?", [world["v2"].id])
    conn.close()
    ok, text = view.verify()
    assert not ok and "BROKEN" in text and "versions row" in text and "phase" in text


def test_gui_dialog_creates_a_key_and_signs(keydir, catalog, tmp_path, qtbot):
    from relman.release.approvals import approvals
    from relman.ui.qt_signing import SignedApproveDialog

    v = _version(catalog, tmp_path)
    dlg = SignedApproveDialog(v.ref, "staging", "Frank")
    qtbot.addWidget(dlg)
    assert [dlg.key_combo.itemText(i) for i in range(dlg.key_combo.count())] == ["(not signed)"]
    dlg.new_key_edit.setText("bad name!")
    dlg.create_btn.click()
    assert "not a usable key name" in dlg.error_label.text()
    dlg.new_key_edit.setText("frank")
    dlg.create_btn.click()
    assert dlg.key_combo.currentText() == "frank" and (keydir / "frank.key").exists()
    assert (keydir / "frank.p256.key").exists()  # the same create_key as the CLI: the OpenSSF twin too
    dlg.accept()
    assert dlg.result_values == {"By": "Frank", "Comment": "", "key": "frank"}
    from relman.app.release import approve

    approve(catalog, v.ref, "staging", by="Frank", key=dlg.result_values["key"])
    assert approvals(catalog, v.id)[0]["signed"]
