"""The Hooks view (issue 26, item 6) with a real window, a real runner and real hook programs:
add through the dialog (a refused URL stays in the dialog, nothing stored), test (a job the
window reports), remove; a promotion made in the window reports the hooks it triggered, a
failing one as an error, the promotion standing. pytest-qt, offscreen; waits on conditions."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings  # noqa: E402

from ui_support import accept_with  # noqa: E402

pytestmark = pytest.mark.heavy  # hooks run in worker processes

SCRIPT = r'''
import pathlib, sys
data = sys.stdin.read()
pathlib.Path(sys.argv[1]).write_text(data)
if len(sys.argv) > 2 and sys.argv[2] == "fail":
    print("the serving share is not mounted", file=sys.stderr)
    sys.exit(1)
'''


@pytest.fixture
def script(tmp_path: Path) -> Path:
    p = tmp_path / "hook prog.py"  # a space: the dialog's line is split into arguments, not run by a shell
    p.write_text(SCRIPT)
    return p


@pytest.fixture
def window(qtbot, catalog, catalog_path, tmp_path):
    from relman.ui.qt_main import MainWindow

    f = tmp_path / "w.bin"
    f.write_bytes(b"w" * 64)
    catalog.add_version("tiny", {"w.bin": f}, format="raw")
    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat),
                   run_jobs=True, cpu_slots=1, poll_ms=200, runner_ms=150)
    qtbot.addWidget(w)
    w.show()
    yield w
    w.shutdown()


def _add(window, fill) -> None:
    window.dialog_runner = accept_with(fill)
    window.view("hooks").request_add()


def test_add_test_and_remove_hooks_in_the_view(window, qtbot, catalog, script, tmp_path):
    import shlex

    view = window.show_view("hooks")
    out = tmp_path / "out.json"
    errors: list[str] = []

    def bad_url(d) -> None:
        d.kind.setCurrentIndex(1)
        d.target.setText("http://10.1.2.3:8080/hook")

    def capture(d) -> None:
        bad_url(d)
        d.accept()  # refused: the error is shown in the dialog, which stays open
        errors.append(d.error_label.text())
        d.reject()

    window.dialog_runner = capture
    view.request_add()
    assert "not a loopback address" in errors[0]
    assert catalog.conn.execute("SELECT COUNT(*) FROM hooks").fetchone()[0] == 0

    _add(window, lambda d: (d.on_event.setCurrentText("promoted"), d.model.setCurrentText("tiny"),
                            d.target.setText(shlex.join([sys.executable, str(script), str(out)]))))
    window.refresh(force=True)
    assert view.table.rowCount() == 1 and view.rows[0]["argv"][1] == str(script)

    view.table.selectRow(0)
    view.request_test()
    qtbot.waitUntil(lambda: not window.busy(), timeout=60_000)
    assert json.loads(out.read_text())["test"] is True
    assert any("Test of hook 1" in text and level == "info" for level, text in window.messages), window.messages

    view.request_remove()
    window.refresh(force=True)
    assert view.table.rowCount() == 0
    assert catalog.query("SELECT kind FROM events WHERE kind LIKE 'hook-%' ORDER BY seq") == [
        {"kind": "hook-add"}, {"kind": "hook-run"}, {"kind": "hook-remove"}]


def test_a_promotion_in_the_window_reports_its_hooks(window, qtbot, catalog, script, tmp_path):
    from relman.app.hooks import add_hook

    ok_out, bad_out = tmp_path / "ok.json", tmp_path / "bad.json"
    add_hook(catalog, "promoted", argv=[sys.executable, str(script), str(ok_out)])
    add_hook(catalog, "promoted", argv=[sys.executable, str(script), str(bad_out), "fail"])
    window.refresh(force=True)
    v = catalog.resolve("tiny@1.0.0")
    window.dialog_runner = accept_with(lambda d: d.reason.setPlainText("ready"))
    window.release.request_transition(v.id, "candidate")
    qtbot.waitUntil(lambda: not window.busy(), timeout=60_000)
    assert catalog.get_version(v.id).phase == "candidate"  # the failing hook undid nothing
    assert json.loads(ok_out.read_text())["event"] == "promoted"
    assert json.loads(bad_out.read_text())["ref"] == "tiny@1.0.0"
    errors = [text for level, text in window.messages if level == "error"]
    assert any("Hook 2" in t and "the serving share is not mounted" in t for t in errors), window.messages
    assert not any("Hook 1" in t for t in errors)
