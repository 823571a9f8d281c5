"""Dialogs that fit the model and the data (issue 28, item 11), driven as a user would:
the compress / fine-tune / evaluate dialogs show the selected versions' task; a fine-tune can
name a new model (queued as the CLI's --model); the recipe form shows only the parameters
that apply (each Param's `shown_when`) and brings back each recipe's last values when it is
opened again, also in a new window; the dataset dialog reads the CSV header, offers its
columns and proposes a name from the file. pytest-qt, offscreen; no job runs (run_jobs=False)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QPoint, QSettings, Qt  # noqa: E402
from PySide6.QtWidgets import QCheckBox, QComboBox, QSpinBox  # noqa: E402

from housekeeping_support import files_of  # noqa: E402


@pytest.fixture
def encoder(catalog, tmp_path):
    """An encoder (feature-extraction, hf) and a labelled text dataset to fine-tune it on."""
    from relman.app.datasets import register_dataset

    files = files_of(tmp_path, "enc", {"config.json": b'{"model_type": "bert"}', "model.safetensors": b"W" * 64})
    v = catalog.add_version("encoder", files, format="hf", task="feature-extraction")
    csv = tmp_path / "reviews.csv"
    csv.write_text("text,label\n" + "".join(f"good film {i},pos\nbad film {i},neg\n" for i in range(10)))
    register_dataset(catalog, csv, "reviews")
    return v


@pytest.fixture
def ini(tmp_path: Path) -> str:
    return str(tmp_path / "gui.ini")


def open_window(qtbot: Any, catalog_path: Path, ini: str) -> Any:
    from relman.ui.qt_main import MainWindow

    w = MainWindow(catalog_path, settings=QSettings(ini, QSettings.Format.IniFormat), run_jobs=False)
    qtbot.addWidget(w)
    w.show()
    return w


@pytest.fixture
def window(qtbot, catalog_path, encoder, ini):
    w = open_window(qtbot, catalog_path, ini)
    yield w
    w.shutdown()


def runner(act: Callable[[Any], None], seen: list[Any]) -> Callable[[Any], int]:
    """The window's dialog runner: record the dialog, act on it as the user, press OK."""
    def run(dialog: Any) -> int:
        seen.append(dialog)
        act(dialog)
        if dialog.isVisible() or dialog.result() == 0:
            dialog.buttons.button(dialog.buttons.StandardButton.Ok).click()
        return dialog.result()
    return run


def choose(qtbot: Any, box: QComboBox, text: str) -> None:
    """Pick `text` in a combo box with the keyboard, as a user would."""
    box.setFocus()
    target = box.findText(text)
    assert target >= 0, (text, [box.itemText(i) for i in range(box.count())])
    while box.currentIndex() != target:
        qtbot.keyClick(box, Qt.Key.Key_Down if box.currentIndex() < target else Qt.Key.Key_Up)


def jobs(catalog: Any, kind: str) -> list[dict[str, Any]]:
    return [{**r, "params": json.loads(r["params"])} for r in
            catalog.query("SELECT id, kind, params FROM jobs WHERE kind = ? ORDER BY id", [kind])]


def test_finetune_shows_the_task_only_the_applicable_fields_and_names_a_new_model(window, encoder, catalog, qtbot):
    seen: list[Any] = []
    shown: dict[str, Any] = {}

    def fill(d: Any) -> None:
        choose(qtbot, d.recipe, "finetune")
        shown["task"] = d.task_label.text()
        shown["hint"] = d.description.text()
        shown["full"] = d.form.visible_names()
        choose(qtbot, d.form.editors["method"], "lora")
        shown["lora"] = d.form.visible_names()
        r = d.form.editors["r"]
        assert isinstance(r, QSpinBox)
        r.selectAll()
        qtbot.keyClicks(r, "4")
        dp = d.form.editors["dp"]
        assert isinstance(dp, QCheckBox)
        on_box = QPoint(8, dp.height() // 2)  # the box itself (the editor has no text beside it)
        qtbot.mouseClick(dp, Qt.MouseButton.LeftButton, pos=on_box)
        shown["dp"] = d.form.visible_names()
        qtbot.mouseClick(dp, Qt.MouseButton.LeftButton, pos=on_box)  # off again
        choose(qtbot, d.form.editors["dataset"], "reviews")
        qtbot.keyClicks(d.child_model, "review-classifier")

    window.set_selection([encoder.id])
    window.dialog_runner = runner(fill, seen)
    window.actions_by_key["compress"].trigger()
    assert shown["task"] == "feature-extraction"
    assert "becomes a classifier" in shown["hint"]
    lora, dp = {"r", "alpha", "target_modules", "lora_dropout"}, {"target_epsilon", "delta", "max_grad_norm"}
    assert not lora & set(shown["full"]) and not dp & set(shown["full"]), shown["full"]
    assert {"dataset", "method", "dp", "epochs", "patience"} <= set(shown["full"])
    assert lora <= set(shown["lora"]) and not dp & set(shown["lora"])
    assert dp <= set(shown["dp"]) and "patience" not in shown["dp"]  # early stopping is not used with dp
    (job,) = jobs(catalog, "compress")
    p = job["params"]
    assert p["model"] == "review-classifier" and p["recipe"] == "finetune", p
    assert p["params"]["method"] == "lora" and p["params"]["r"] == 4 and p["params"]["dp"] is False
    assert p["params"]["dataset"] == "reviews"
    assert any("as a version of review-classifier" in m[1] for m in window.messages), window.messages


def test_a_bad_new_model_name_is_refused_in_the_dialog_and_nothing_is_queued(window, encoder, catalog, qtbot):
    seen: list[Any] = []

    def fill(d: Any) -> None:
        choose(qtbot, d.recipe, "finetune")
        choose(qtbot, d.form.editors["dataset"], "reviews")
        qtbot.keyClicks(d.child_model, "bad name")

    window.set_selection([encoder.id])
    window.dialog_runner = runner(fill, seen)
    window.actions_by_key["compress"].trigger()
    (d,) = seen
    assert d.result() == 0 and "new model name" in d.error_label.text() and "U+0020" in d.error_label.text()
    assert jobs(catalog, "compress") == []


def test_fields_that_do_not_apply_take_their_defaults(window, encoder, catalog, qtbot):
    """A LoRA rank typed, then method switched back to full: the hidden rank is not sent."""
    def fill(d: Any) -> None:
        choose(qtbot, d.recipe, "finetune")
        choose(qtbot, d.form.editors["method"], "lora")
        d.form.editors["r"].selectAll()
        qtbot.keyClicks(d.form.editors["r"], "2")
        choose(qtbot, d.form.editors["method"], "full")
        assert "r" not in d.form.visible_names()
        choose(qtbot, d.form.editors["dataset"], "reviews")

    window.set_selection([encoder.id])
    window.dialog_runner = runner(fill, [])
    window.actions_by_key["compress"].trigger()
    (job,) = jobs(catalog, "compress")
    assert job["params"]["params"]["method"] == "full" and job["params"]["params"]["r"] == 8  # the default
    assert job["params"]["model"] is None  # no new name: the parent's model


def test_each_recipes_last_values_come_back_on_reopen_and_in_a_new_window(window, encoder, catalog, qtbot,
                                                                          catalog_path, ini):
    def first(d: Any) -> None:
        choose(qtbot, d.recipe, "finetune")
        choose(qtbot, d.form.editors["method"], "lora")
        d.form.editors["epochs"].selectAll()
        qtbot.keyClicks(d.form.editors["epochs"], "7")
        choose(qtbot, d.form.editors["dataset"], "reviews")

    window.set_selection([encoder.id])
    window.dialog_runner = runner(first, [])
    window.actions_by_key["compress"].trigger()
    assert len(jobs(catalog, "compress")) == 1

    seen: dict[str, Any] = {}

    def look(d: Any) -> None:
        choose(qtbot, d.recipe, "prune-magnitude")  # another recipe keeps its own (default) values
        seen["prune"] = d.form.raw_values()["sparsity"]
        choose(qtbot, d.recipe, "finetune")
        seen["values"] = d.form.raw_values()
        seen["visible"] = d.form.visible_names()
        d.reject()

    window.dialog_runner = lambda d: (look(d), d.result())[1]
    window.actions_by_key["compress"].trigger()
    assert seen["values"]["method"] == "lora" and seen["values"]["epochs"] == 7 and seen["values"]["dataset"] == "reviews"
    assert "r" in seen["visible"]  # the remembered method=lora shows LoRA's fields
    assert seen["prune"] == 0.5
    window.save_settings()

    other = open_window(qtbot, catalog_path, ini)  # a new window on the same settings file
    try:
        other.set_selection([encoder.id])
        seen.clear()
        other.dialog_runner = lambda d: (look(d), d.result())[1]
        other.actions_by_key["compress"].trigger()
        assert seen["values"]["method"] == "lora" and seen["values"]["epochs"] == 7
    finally:
        other.shutdown()
    assert len(jobs(catalog, "compress")) == 1  # looking queued nothing


def test_evaluate_dialog_shows_the_task(window, encoder, qtbot):
    seen: list[Any] = []
    window.set_selection([encoder.id])
    window.dialog_runner = lambda d: (seen.append(d.task_label.text()), d.reject(), d.result())[2]
    window.actions_by_key["evaluate"].trigger()
    assert seen == ["feature-extraction"]


def test_dataset_dialog_reads_the_header_offers_columns_and_proposes_a_name(window, catalog, tmp_path, qtbot):
    csv = tmp_path / "Movie Reviews 2024.csv"
    csv.write_text("id,review,sentiment,region\n" + "".join(f"{i},film {i},{'pos' if i % 2 else 'neg'},r{i % 3}\n"
                                                         for i in range(12)))
    shown: dict[str, Any] = {}

    def fill(d: Any) -> None:
        qtbot.keyClicks(d.path, str(csv))
        shown["name"] = d.name.text()
        shown["offered"] = [d.text_col.itemText(i) for i in range(d.text_col.count())]
        shown["roles"] = (d.text_col.currentText(), d.label_col.currentText(), d.group_col.currentText())
        shown["hint"] = d.columns_hint.text()

    window.dialog_runner = runner(fill, [])
    window.actions_by_key["dataset"].trigger()
    assert shown["name"] == "movie-reviews-2024"
    assert shown["offered"] == ["", "id", "review", "sentiment", "region"]
    assert shown["roles"] == ("review", "sentiment", "region")
    assert "review" in shown["hint"]
    (job,) = jobs(catalog, "register_dataset")
    p, o = job["params"], job["params"]["options"]
    assert p["name"] == "movie-reviews-2024" and o["text_col"] == "review" and o["label_col"] == "sentiment"
    assert o["group_col"] == "region"


def test_dataset_dialog_keeps_a_typed_name_and_a_typed_column(window, catalog, tmp_path, qtbot):
    csv = tmp_path / "tickets.csv"
    csv.write_text("body,queue\nprinter broken,it\n")
    shown: dict[str, Any] = {}

    def fill(d: Any) -> None:
        qtbot.keyClicks(d.name, "support")
        d.label_col.setCurrentText("")
        qtbot.keyClicks(d.label_col.lineEdit(), "queue")
        qtbot.keyClicks(d.path, str(csv))
        shown["name"], shown["label"] = d.name.text(), d.label_col.currentText()
        shown["text"] = d.text_col.currentText()  # "text" is not a column and no usual name matches

    window.dialog_runner = runner(fill, [])
    window.actions_by_key["dataset"].trigger()
    assert shown == {"name": "support", "label": "queue", "text": ""}
