"""A rule or a search naming a metric nobody stores (`acuracy`) is refused with a suggestion
(issue 28 item 9): `relman policy set`, `relman search`, the policy editor as you type and the
versions filter box. Real catalog, real CLI (click's runner), pytest-qt offscreen for the GUI."""

from __future__ import annotations

import json

import pytest

from housekeeping_support import planted_version
from relman.catalog import Metric

TYPO = "unknown metric 'acuracy' (did you mean accuracy?)"


@pytest.fixture
def planted(catalog, tmp_path):
    a = planted_version(catalog, tmp_path, "m", "a", shared=b"S" * 40, unique=b"A" * 30)
    b = planted_version(catalog, tmp_path, "m", "b", shared=b"S" * 40, unique=b"B" * 20)
    catalog.add_metrics(a.id, [Metric("quality", "accuracy", 0.95)])
    catalog.add_metrics(b.id, [Metric("quality", "accuracy", 0.85), Metric("custom", "zebra_score", 3.0)])
    return {"a": a, "b": b}


def _one_line_refusal(r, message: str) -> None:
    assert r.exit_code != 0, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], r.output
    assert "Traceback" not in r.output and "warning" not in r.output.lower()


def test_policy_set_refuses_an_unknown_metric_in_one_line_and_stores_nothing(catalog, planted, tmp_path, run_cli):
    events = len(catalog.events())
    for rule in ("acuracy >= 0.9", "accuracy >= production.acuracy - 0.01"):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"gates": {"candidate": [rule]}}))
        _one_line_refusal(run_cli("policy", "set", "m", str(bad)), TYPO)
    assert catalog.query("SELECT COUNT(*) AS n FROM policies")[0]["n"] == 0 and len(catalog.events()) == events
    # the declared families, the version-row values and the catalog's own names all pass
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"gates": {"candidate": [
        "accuracy >= 0.9", "accuracy_delta_vs_production.upper >= -0.01", "latency_p50_ms <= 50",
        "canary_share >= 0", "size_mb <= 10", "zebra_score >= parent", "approvals >= 1"]}}))
    r = run_cli("policy", "set", "m", str(good))
    assert r.exit_code == 0 and "revision 1" in r.output, r.output
    # a name far from every known one says so instead of guessing
    far = tmp_path / "far.toml"
    far.write_text('[gates]\ncandidate = ["qqqq >= 1"]\n')
    _one_line_refusal(run_cli("policy", "set", "m", str(far)), "unknown metric 'qqqq' (no suite stores it")


def test_names_recipes_declare_pass_and_a_bare_family_name_says_how_it_is_written(catalog, planted):
    from relman.release.metric_names import unknown_metric_message

    assert unknown_metric_message("privacy_epsilon") is None  # a DP recipe stores it on its child
    assert unknown_metric_message("f1") == "unknown metric 'f1' (that family is named f1/<…>, e.g. f1/NAME)"
    assert "e.g. f1/positive" in unknown_metric_message("f1", {"f1/positive", "accuracy"})


def test_search_refuses_an_unknown_metric_instead_of_finding_nothing(catalog, planted, run_cli):
    from relman.app.search import SearchError, search

    with pytest.raises(SearchError, match=r"did you mean accuracy\?"):
        search(catalog, "acuracy>0.9")
    _one_line_refusal(run_cli("search", "acuracy>0.9"), TYPO)
    assert [r.id for r in search(catalog, "accuracy>0.9")] == [planted["a"].id]
    assert [r.id for r in search(catalog, "zebra_score>=3")] == [planted["b"].id]  # stored, not declared
    assert search(catalog, "latency_p50_ms<5") == []  # declared, measured by nobody yet: an honest empty


def test_a_stored_policy_with_an_unknown_metric_still_loads(catalog, planted):
    """Loading (gates at promotion, `policy show`) does not refuse an old stored policy: only
    setting and editing check the names."""
    from relman.release.policy import get_policy, validate

    m = catalog.get_model("m")
    catalog.conn.execute("INSERT INTO policies (model_id, revision, body, created_at, created_by) "
                         "VALUES (?, 1, ?, '2026-01-01T00:00:00', 'old')",
                         [m["id"], json.dumps(validate({"gates": {"candidate": ["acuracy >= 0.9"]}}))])
    body, rev = get_policy(catalog, "m")
    assert rev == 1 and body["gates"]["candidate"] == ["acuracy >= 0.9"]


# -- the GUI, acting as the user -----------------------------------------------------------------
@pytest.fixture
def window(qtbot, catalog_path, planted, tmp_path):
    pytest.importorskip("PySide6")
    pytest.importorskip("pytestqt")
    from PySide6.QtCore import QSettings

    from relman.ui.qt_main import MainWindow

    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat),
                   run_jobs=False)
    qtbot.addWidget(w)
    w.show()
    yield w
    w.shutdown()


def test_policy_editor_says_unknown_metric_while_the_rule_is_typed(window, qtbot, planted, catalog):
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QTextCursor

    from relman.ui.qt_policy import open_policy_editor

    window.dialog_runner = lambda d: 0  # open without blocking
    window.set_selection([planted["a"].id])
    ed = open_policy_editor(window)
    assert ed is not None and ed.status.text() == "✓ valid policy"
    ed.editor.setFocus()
    ed.editor.selectAll()
    qtbot.keyClick(ed.editor, Qt.Key.Key_Delete)
    qtbot.keyClicks(ed.editor, '{"gates": {"candidate": ["acuracy >= 0.9"]}}')
    assert ed.body is None and not ed.save_button.isEnabled()
    assert TYPO in ed.status.text() and ed.status.text().startswith("✗")
    assert ed.error.line == 1 and ed.error.column == len('{"gates": {"candidate": ["') + 1  # at the name
    ed.jump_to_error()
    assert ed.editor.textCursor().positionInBlock() == ed.error.column - 1
    # the user fixes the typo: a 'c' after the first one
    cur = ed.editor.textCursor()
    cur.movePosition(QTextCursor.MoveOperation.Right, n=1)
    ed.editor.setTextCursor(cur)
    qtbot.keyClicks(ed.editor, "c")
    assert '"accuracy >= 0.9"' in ed.editor.toPlainText()
    assert ed.status.text() == "✓ valid policy" and ed.save_button.isEnabled()
    assert ed.save() == 1
    assert catalog.query("SELECT COUNT(*) AS n FROM policies")[0]["n"] == 1


def test_versions_filter_says_unknown_metric_for_a_typed_search(window, qtbot, planted):
    box = window.versions.filter_edit
    box.setFocus()
    qtbot.keyClicks(box, "acuracy>0.9")
    qtbot.waitUntil(lambda: "unknown metric" in window.versions.count_label.text(), timeout=5000)
    assert TYPO in window.versions.model.filter_error and TYPO in box.toolTip()
    assert window.versions.count_label.text().startswith("0 of 2 versions — ")
    box.clear()
    qtbot.keyClicks(box, "accuracy>0.9")
    qtbot.waitUntil(lambda: window.versions.count_label.text() == "1 of 2 versions", timeout=5000)
    assert window.versions.model.filter_error == ""
