"""Dead ends to the CLI, removed (issue 28, item 8), acting as the user does:

- an error shown beside the field that sets a thing names that field, not the CLI flag;
- the policy editor has its own syntax help (the grammar, examples, metric names);
- an optimization's candidates are a table in the window, the chosen one marked;
- the model card can be viewed, rendered.

The catalog is real (SQLite, the app layer's checks); versions are stored from small files
(no model is loaded: none of these paths opens an artifact)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings, Qt  # noqa: E402


@pytest.fixture
def settings(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def encoder(catalog, tmp_path):
    """A root version (no parent) and a registered CSV dataset."""
    from relman.app.datasets import register_dataset

    folder = tmp_path / "enc"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert", "architectures": ["BertForSequenceClassification"]}')
    (folder / "model.safetensors").write_bytes(b"planted")
    files = {p.name: p for p in folder.iterdir()}
    v = catalog.add_version("enc", files, format="hf", task="text-classification")
    csv = tmp_path / "reviews.csv"
    csv.write_text("text,label\n" + "".join(f"review {i},{i % 2}\n" for i in range(20)))
    register_dataset(catalog, csv, "reviews")
    return v


@pytest.fixture
def window(qtbot, catalog_path, encoder, settings):
    from relman.ui.qt_main import MainWindow

    w = MainWindow(catalog_path, settings=settings, run_jobs=False)
    qtbot.addWidget(w)
    w.show()
    yield w
    w.shutdown()


# -- errors name the GUI field ----------------------------------------------------------------------
def evaluate_like_a_user(window, encoder, dataset: str) -> str:
    """Evaluate… with only fidelity ticked, against "each version's own parent"; the inline error."""
    seen: list[str] = []

    def run(dialog) -> int:
        for name, box in dialog.suite_boxes.items():
            box.setChecked(name == "fidelity")
        dialog.dataset.setCurrentText(dataset)
        dialog.buttons.button(dialog.buttons.StandardButton.Ok).click()
        seen.append(dialog.error_label.text())
        assert dialog.result_values is None  # refused: the dialog stays open with its input
        return 0
    window.dialog_runner = run
    window.set_selection([encoder.id])
    window.actions_by_key["evaluate"].trigger()
    assert seen, "the evaluate dialog did not open"
    return seen[0]


def test_fidelity_without_a_parent_names_the_fidelity_field(window, encoder, catalog):
    text = evaluate_like_a_user(window, encoder, "reviews")
    assert "has none" in text and "'Fidelity against'" in text
    assert "--" not in text
    assert not catalog.query("SELECT 1 FROM jobs")  # nothing queued


def test_a_suite_that_needs_data_names_the_dataset_field(window, encoder, catalog):
    text = evaluate_like_a_user(window, encoder, "(none)")
    assert "needs a dataset" in text and "'Dataset'" in text and "--dataset" not in text and "NAME" not in text


def test_window_messages_never_name_a_flag(window):
    from relman.ui.gui_terms import in_gui_terms

    window.show_error("optimizing needs --dataset NAME of a text dataset; --max-drop is a fraction")
    level, text = window.messages[-1]
    assert level == "error" and "--" not in text
    assert "'Dataset'" in text and "'Max accuracy drop'" in text
    assert in_gui_terms("--seq-len 512 is too long") == "the 'seq len' setting 512 is too long"
    assert in_gui_terms("give --param target_modules=... (layers: a, b)") == \
        "give the parameter target_modules=... (layers: a, b)"


# -- the policy editor's syntax help --------------------------------------------------------------------
def test_policy_editor_has_inline_syntax_help(window, qtbot, encoder):
    from PySide6.QtWidgets import QLabel

    from relman.release.rules import BOUNDS, COMPARATORS, CONDITIONS, parse_rule
    from relman.ui.policy_help import EXAMPLES

    opened: list[object] = []

    def run(dialog) -> int:
        opened.append(dialog)
        labels = " ".join(lbl.text() for lbl in dialog.findChildren(QLabel))
        assert "relman policy" not in labels and "--help" not in labels
        assert not dialog.help.isVisible()
        qtbot.mouseClick(dialog.help_button, Qt.MouseButton.LeftButton)
        assert dialog.help.isVisible()
        text = dialog.help.toPlainText()
        for word in (*CONDITIONS, *BOUNDS, *COMPARATORS, "transitions", "approvals >= 2", "when"):
            assert word in text, word
        # a rule copied from the help is a valid rule in the editor
        for rule, _meaning in EXAMPLES:
            parse_rule(rule)
        dialog.set_text('{"gates": {"candidate": ["%s"]}}' % EXAMPLES[-1][0])
        assert dialog.status.text() == "✓ valid policy"
        qtbot.mouseClick(dialog.help_button, Qt.MouseButton.LeftButton)
        assert not dialog.help.isVisible()
        return 0
    window.dialog_runner = run
    window.set_selection([encoder.id])
    window.actions_by_key["policy"].trigger()
    assert opened


# -- optimization candidates ------------------------------------------------------------------------
def _stored_search(catalog, parent, tmp_path: Path) -> tuple[int, list]:
    """A finished optimize job as the job stores it (relman.compress.optimize.Figures), over real
    child versions: one meets the budget (chosen), one is too lossy, one recipe failed."""
    from relman.compress.optimize import Figures, rank_within_budget
    from relman.jobs.queue import QUEUED, SUCCEEDED, enqueue, finish

    kids = []
    for name in ("int8", "prune"):
        f = tmp_path / f"{name}.onnx"
        f.write_bytes(name.encode())
        kids.append(catalog.add_version("enc", {"model.onnx": f}, format="onnx", task=parent.task,
                                        parents=[(parent.id, None)], relation=name))
    base = Figures(parent.ref, parent.id, 0.9125, 0.0, 4.0e6, 12.5, 1.0, [1.0, 1.0], label="parent", pareto=True)
    good = Figures(kids[0].ref, kids[0].id, 0.9071, 0.0054, 1.1e6, 7.1, 0.613, [0.588, 0.641],
                   label="ORT INT8 dynamic", recipe="onnx-int8-dynamic", improves=True, meets=True, pareto=True)
    lossy = Figures(kids[1].ref, kids[1].id, 0.7313, 0.1812, 2.0e6, 9.9, 0.802, [0.77, 0.83],
                    label="prune 50 %", recipe="prune-structured", improves=True)
    best = rank_within_budget([good, lossy], 0.01, "latency")[0]
    job = enqueue(catalog, "optimize", {"parent_version_id": parent.id, "max_drop": 0.01})
    result = {"parent": base.as_dict(), "tried": [good.as_dict(), lossy.as_dict()],
              "failed": [{"label": "static INT8", "recipe": "onnx-int8-static", "error": "no calibration rows"}],
              "best": best.ref, "best_figures": best.as_dict(), "stopped": "candidates exhausted",
              "objective": "latency", "max_drop": 0.01, "search": "first within budget",
              "quality_metric": "quality/accuracy", "quality_source": "dataset"}
    job_id = job["id"] if isinstance(job, dict) else int(job)
    assert finish(catalog, job_id, SUCCEEDED, result=result, from_status=QUEUED)
    return job_id, kids


def test_no_search_yet_says_how_to_start_one(window):
    window.actions_by_key["optimize-results"].trigger()
    level, text = window.messages[-1]
    assert level == "error" and "Optimize…" in text


def test_optimization_candidates_table_marks_the_chosen_one(window, qtbot, catalog, encoder, tmp_path):
    job_id, kids = _stored_search(catalog, encoder, tmp_path)
    window.refresh(force=True)
    window.actions_by_key["optimize-results"].trigger()
    dialog = window.optimize_results
    qtbot.waitUntil(dialog.isVisible)
    t = dialog.table
    assert t.rowCount() == 4  # the parent, two tried candidates, one failed
    rows = {dialog.cell(r, "Candidate"): r for r in range(t.rowCount())}
    p, good, lossy, failed = (rows[k] for k in ("parent (reference)", "ORT INT8 dynamic", "prune 50 %", "static INT8"))
    assert dialog.cell(good, "Chosen") == "★ chosen" and t.item(good, 0).font().bold()
    assert [dialog.cell(r, "Chosen") for r in (p, lossy, failed)] == ["", "", ""]
    assert dialog.cell(good, "Quality") == "0.9071" and dialog.cell(good, "Drop") == "0.0054"
    assert dialog.cell(good, "Latency ratio") == "0.613" and dialog.cell(good, "95 % interval") == "0.588 – 0.641"
    assert dialog.cell(good, "Within budget") == "yes" and dialog.cell(lossy, "Within budget") == "no"
    assert dialog.cell(lossy, "Drop") == "0.1812" and dialog.cell(lossy, "Pareto") == "no"
    assert dialog.cell(p, "Quality") == "0.9125" and dialog.cell(p, "Version") == encoder.ref
    assert "no calibration rows" in dialog.cell(failed, "Note")
    assert f"Job {job_id}" in dialog.summary.text() and kids[0].ref in dialog.summary.text()

    rect = t.visualRect(t.model().index(good, 2))  # double-click the chosen row: it is selected
    qtbot.mouseClick(t.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())  # a double click's first press
    qtbot.mouseDClick(t.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert window.selected_ids == [kids[0].id]


# -- the model card ---------------------------------------------------------------------------------
def test_view_model_card_renders_the_card(window, qtbot, catalog, encoder):
    from relman.app.bundles import set_card_fields
    from relman.ui.qt_export import CardDialog

    set_card_fields(catalog, encoder.ref, {"description": "Planted description 7f3a."})
    window.refresh(force=True)
    window.set_selection([encoder.id])
    menu_texts = [a.text() for top in window.menuBar().actions() for a in top.menu().actions()]
    assert "View model card…" in menu_texts
    window.actions_by_key["card-view"].trigger()
    viewer = window.model_card_viewer
    qtbot.waitUntil(viewer.isVisible)
    text = viewer.browser.toPlainText()
    assert "enc 1.0.0" in text and "Planted description 7f3a." in text
    assert "Intended use" in text and "Write model card" in text and "relman card" not in text
    assert "---" not in text.splitlines()[0]  # the front matter is a code block, not stray rules
    assert "manifest_sha256" in text
    doc = viewer.browser.document()
    assert doc.toMarkdown().count("|") > 4  # the facts table is a table

    opened: list[object] = []
    window.dialog_runner = lambda d: (opened.append(d), 0)[1]
    qtbot.mouseClick(viewer.edit_button, Qt.MouseButton.LeftButton)
    assert len(opened) == 1 and isinstance(opened[0], CardDialog)


def test_view_model_card_needs_a_selection(window):
    window.selection.clear()
    window.actions_by_key["card-view"].trigger()
    level, text = window.messages[-1]
    assert level == "error" and "select a version" in text
