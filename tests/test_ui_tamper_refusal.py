"""Issue 28, item 4 (part): after a metric is edited behind the catalog's back, the user's
click on Promote opens a dialog whose refusal is red and whose Promote button is disabled
(it was green and enabled); pressing it anyway submits nothing."""

from __future__ import annotations

import sqlite3

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings  # noqa: E402
from PySide6.QtWidgets import QDialogButtonBox  # noqa: E402

from relman.catalog import Metric  # noqa: E402


def test_promote_after_tampering_is_refused_in_red_with_promote_disabled(qtbot, catalog, catalog_path, tmp_path):
    from relman.ui.qt_main import MainWindow
    from relman.ui.qt_promote import PromoteDialog

    (tmp_path / "w").mkdir()
    f = tmp_path / "w" / "model.safetensors"
    f.write_bytes(b"m" * 1000)
    v = catalog.add_version("m", {"model.safetensors": f}, format="hf", task="text-classification")
    catalog.add_metrics(v.id, [Metric("quality", "accuracy", 0.61)])
    attacker = sqlite3.connect(catalog.db_path, isolation_level=None)
    attacker.execute("UPDATE metrics SET value = 0.99 WHERE name = 'accuracy'")  # the planted edit
    attacker.close()
    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat),
                   run_jobs=False)
    qtbot.addWidget(w)
    w.show()
    seen = []

    def press_ok(dialog):
        seen.append(dialog)
        if isinstance(dialog, PromoteDialog):
            dialog.reason.setPlainText("ship it")
        dialog.accept()
        return dialog.result()
    w.dialog_runner = press_ok
    board = w.show_view("board")
    assert board.select_version(v.id)
    board.promote_btn.click()
    dlg = next(d for d in seen if isinstance(d, PromoteDialog))
    assert dlg.refused and dlg.verdict.text().startswith("Refused:"), dlg.verdict.text()
    assert "#c4453b" in dlg.verdict.styleSheet()
    assert not dlg.buttons.button(QDialogButtonBox.StandardButton.Ok).isEnabled()
    assert catalog.get_version(v.id).phase == "draft"  # nothing was promoted
    w.shutdown()
