"""Issue 28, item 5: the gate report shows its verdicts.

A user opened the Promote dialog on a version whose policy has long rule texts: the result
column was pushed off-screen, failures were not first and the details were raw JSON. Here a
real catalog (a production version and a child with stored metrics and 95 % intervals) and a
policy with one very long rule; the user selects the child on the release board and presses
Promote. The verdict column is first and on screen, the long rule is elided on one line with
its whole text in the tooltip, the rows read fail → skipped → pass, and the details are the
sentences relman.release.gates writes ("accuracy 0.81 [0.78, 0.84] ≥ 0.8 (production 0.83)").
`relman gates` prints the same sentences in the same order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings  # noqa: E402

LONG_RULE = ("accuracy_delta_vs_production.lower >= -0.01 when classifier and has_parent and has_production "
             "and not compressed")  # the child has no paired measurement: fails "not evaluated"
RULES = [
    "accuracy >= 0.80",  # 0.81: pass
    LONG_RULE,
    "latency_p95_ms <= 1.1 * production when compressed",  # the child is not compressed: skipped
    "accuracy >= production.accuracy - 0.05",  # 0.81 ≥ 0.78: pass, names production's 0.83
    "size_mb <= 0.000001",  # fail
]


@pytest.fixture
def family(catalog: Any, tmp_path: Path) -> dict[str, Any]:
    """'spam': v1 in production (accuracy 0.83), its child (accuracy 0.81 [0.78, 0.84]) a draft."""
    from relman.app import release
    from relman.catalog import Metric

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "weights.bin").write_bytes(b"\x01" * 4096)
    files = {p.name: p for p in folder.iterdir()}
    base = catalog.add_version("spam", files, format="hf", task="text-classification")
    release.set_policy(catalog, "spam", {"approvals": {}, "gates": {"candidate": [], "staging": [], "production": []},
                                         "verify_artifacts": []})
    for phase in ("candidate", "staging", "production"):
        release.promote(catalog, base.ref, phase, why="the first release")
    catalog.add_metrics(base.id, [Metric("quality", "accuracy", 0.83, {"interval": [0.80, 0.86]}),
                                  Metric("latency", "latency_p95_ms", 10.0)])
    child = catalog.add_version("spam", files, format="hf", task="text-classification", parents=[(base.id, None)],
                                relation="finetune", event_kind="job-result")
    catalog.add_metrics(child.id, [Metric("quality", "accuracy", 0.81, {"interval": [0.78, 0.84]}),
                                   Metric("latency", "latency_p95_ms", 12.0)])
    release.set_policy(catalog, "spam", {"approvals": {}, "gates": {"candidate": RULES, "staging": [],
                                                                     "production": []}, "verify_artifacts": []})
    return {"base": catalog.get_version(base.id), "child": catalog.get_version(child.id)}


def open_window(qtbot: Any, catalog_path: Path, tmp_path: Path) -> Any:
    from relman.ui.qt_main import MainWindow

    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat),
                   run_jobs=False)
    qtbot.addWidget(w)
    w.resize(1024, 700)  # the small screen of the walk
    w.show()
    return w


def test_the_verdicts_come_first_and_stay_on_screen(qtbot, catalog, catalog_path, family, tmp_path):
    from relman.ui.qt_promote import PromoteDialog

    child = family["child"]
    w = open_window(qtbot, catalog_path, tmp_path)
    board = w.show_view("board")
    assert board.select_version(child.id)
    seen: list[PromoteDialog] = []

    def look(dialog: Any) -> int:
        seen.append(dialog)
        dialog.show()  # as exec() would: laid out at its own size
        qtbot.waitExposed(dialog)
        dialog.reject()
        return dialog.result()

    def inspect(dialog: Any) -> int:
        look(dialog)
        table = dialog.rules_table
        inspect.geometry = {  # type: ignore[attr-defined]
            "result_right": table.columnViewportPosition(0) + table.columnWidth(0),
            "result_left": table.columnViewportPosition(0),
            "viewport": table.viewport().width(),
            "hscroll": table.horizontalScrollBar().maximum(),
            "rule_width": table.columnWidth(1),
            "rule_text_width": table.fontMetrics().horizontalAdvance(LONG_RULE),
        }
        return dialog.result()
    w.dialog_runner = inspect
    board.promote_btn.click()
    dlg = seen[-1]
    assert isinstance(dlg, PromoteDialog) and dlg.passed is False
    table = dlg.rules_table
    assert [table.horizontalHeaderItem(c).text() for c in range(3)] == ["Result", "Rule", "Details"]
    geo = inspect.geometry  # type: ignore[attr-defined]
    # the verdict is in the first column, inside the visible part of the table, with no
    # horizontal scrolling needed to see any column
    assert geo["result_left"] == 0 and geo["result_right"] <= geo["viewport"], geo
    assert geo["hscroll"] == 0, geo
    # the long rule does not fit its column: it is elided there, and whole in its tooltip
    assert geo["rule_text_width"] > geo["rule_width"], geo
    rows = {table.item(r, 1).text(): r for r in range(table.rowCount())}
    assert table.item(rows[LONG_RULE], 1).toolTip() == LONG_RULE
    # failures first, then skipped, then passed (the policy's order within each)
    results = [table.item(r, 0).text() for r in range(table.rowCount())]
    assert results == ["✗ FAIL", "✗ FAIL", "○ skipped", "✓ pass", "✓ pass"], results
    order = [table.item(r, 1).text() for r in range(table.rowCount())]
    assert order == [LONG_RULE, "size_mb <= 0.000001", RULES[2], RULES[0], RULES[3]], order
    details = {table.item(r, 1).text(): table.item(r, 2).text() for r in range(table.rowCount())}
    assert details["accuracy >= 0.80"] == "accuracy 0.81 [0.78, 0.84] ≥ 0.8"
    assert details[RULES[3]] == "accuracy 0.81 [0.78, 0.84] ≥ 0.78 (production 0.83)"
    assert details["size_mb <= 0.000001"].startswith("size_mb 0.00") and "is not ≤ 1e-06" in details[
        "size_mb <= 0.000001"]
    assert details[RULES[2]] == f"does not apply: {child.ref} is not compressed"
    assert details[LONG_RULE].startswith(f"not evaluated: {child.ref} has no 'accuracy_delta_vs_production'")
    for text in details.values():  # sentences, not JSON or "name = value" dumps
        assert "{" not in text and " = " not in text and "is not has" not in text, text
    assert table.item(rows[LONG_RULE], 2).toolTip() == details[LONG_RULE]
    assert child.id in board.card_ids("draft")  # the user cancelled: nothing moved


def test_relman_gates_prints_the_same_sentences_failures_first(catalog, family, run_cli):
    child = family["child"]
    result = run_cli("gates", child.ref, "--to", "candidate")
    assert result.exit_code == 1  # the gates fail
    lines = [ln.strip() for ln in result.output.splitlines()[1:] if ln.strip()]
    marks = [ln.split()[0] for ln in lines]
    assert marks == ["FAIL", "FAIL", "skip", "ok", "ok"], result.output
    assert lines[0].split(None, 1)[1].startswith(LONG_RULE)
    assert lines[3].endswith("accuracy 0.81 [0.78, 0.84] ≥ 0.8")
    assert lines[4].endswith("accuracy 0.81 [0.78, 0.84] ≥ 0.78 (production 0.83)")
    assert lines[2].endswith(f"does not apply: {child.ref} is not compressed")
