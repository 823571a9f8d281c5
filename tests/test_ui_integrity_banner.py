"""Issue 28, item 4: a row edited with sqlite3 behind the open window's back turns a red banner
on by itself (no Verify pressed), naming the finding; the Audit view shows the failing state;
"Review and accept…" with a reason clears the banner, and `relman verify` is clean again."""

from __future__ import annotations

import sqlite3

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings, Qt  # noqa: E402

from relman.catalog import Metric  # noqa: E402


def _world(catalog, tmp_path):
    (tmp_path / "w").mkdir()
    f = tmp_path / "w" / "model.safetensors"
    f.write_bytes(b"m" * 1000)
    v = catalog.add_version("m", {"model.safetensors": f}, format="hf", task="text-classification")
    catalog.add_metrics(v.id, [Metric("quality", "accuracy", 0.61)])
    return v


def _window(qtbot, catalog_path, tmp_path):
    from relman.ui.qt_main import MainWindow

    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat),
                   run_jobs=False, poll_ms=50)
    qtbot.addWidget(w)
    w.show()
    return w


def _tamper(catalog, sql):
    attacker = sqlite3.connect(catalog.db_path, isolation_level=None)  # no relman triggers here
    attacker.execute(sql)
    attacker.close()


def test_edit_behind_the_windows_back_shows_a_red_banner_and_accept_clears_it(qtbot, catalog, catalog_path,
                                                                             tmp_path, run_cli):
    from relman.ui.qt_integrity_banner import ReviewAcceptDialog

    _world(catalog, tmp_path)
    w = _window(qtbot, catalog_path, tmp_path)
    audit = w.show_view("audit")
    assert not w.integrity_banner.isVisible()
    assert audit.result.text().startswith("Audit chain intact")  # shown without pressing Verify

    _tamper(catalog, "UPDATE metrics SET value = 0.99 WHERE name = 'accuracy'")  # the planted edit
    qtbot.waitUntil(lambda: w.integrity_banner.isVisible(), timeout=10000)
    text = w.integrity_banner.label.text()
    assert text.startswith("Integrity check failed: 1 finding(s)") and "metrics" in text and "value" in text, text
    assert "BROKEN" in audit.result.text() and "#c4453b" in audit.result.styleSheet()  # no Verify pressed

    seen = []

    def review(dialog):
        seen.append(dialog)
        assert isinstance(dialog, ReviewAcceptDialog)
        assert "metrics" in dialog.findings.toPlainText()
        dialog.accept()  # no reason yet: refused inline, the dialog stays
        assert dialog.result_values is None and "Reason" in dialog.error_label.text()
        dialog.reason.setPlainText("checked against the lab notebook: 0.99 is the re-run's figure")
        dialog.accept()
        return dialog.result()
    w.dialog_runner = review
    qtbot.mouseClick(w.integrity_banner.review_btn, Qt.MouseButton.LeftButton)
    assert seen, "the banner's button opened no dialog"
    qtbot.waitUntil(lambda: not w.integrity_banner.isVisible(), timeout=10000)
    assert audit.result.text().startswith("Audit chain intact"), audit.result.text()
    accept = [e for e in catalog.events() if e["kind"] == "integrity-accept"][-1]
    assert accept["payload"]["why"].startswith("checked against the lab notebook") and accept["payload"]["problems"]
    r = run_cli("verify")
    assert r.exit_code == 0, r.output

    _tamper(catalog, "UPDATE metrics SET value = 0.123")  # a later edit is caught again
    qtbot.waitUntil(lambda: w.integrity_banner.isVisible(), timeout=10000)
    w.shutdown()


def test_banner_is_red_on_open_and_accept_without_a_key_says_so_in_the_dialog(qtbot, catalog, catalog_path,
                                                                            tmp_path, monkeypatch):
    """A catalog already tampered with when the window opens shows the banner at once; on a
    machine without the catalog's key, accepting is refused inside the dialog and nothing changes."""
    _world(catalog, tmp_path)
    _tamper(catalog, "DELETE FROM metrics")
    w = _window(qtbot, catalog_path, tmp_path)
    assert w.integrity_banner.isVisible() and "metrics" in w.integrity_banner.label.text()
    monkeypatch.setenv("RELMAN_KEYS_DIR", str(tmp_path / "elsewhere"))  # this machine lacks the catalog's key
    w.catalog._signer_cache = False
    before = len(catalog.events())
    errors = []

    def review(dialog):
        dialog.reason.setPlainText("looks fine to me")
        dialog.accept()
        errors.append(dialog.error_label.text())
        return dialog.result()
    w.dialog_runner = review
    w.integrity_banner.review_btn.click()
    assert errors and "no signing key for this catalog here" in errors[0], errors
    assert w.integrity_banner.isVisible()
    assert len(catalog.events()) == before  # nothing accepted
    w.shutdown()
