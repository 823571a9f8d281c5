"""Dialogs for the actions. Each dialog only collects and checks input (`values()`); a
controller calls the app layer with them. Tests construct a dialog, fill it and call
`accept()` (or read `values()`) instead of blocking on `exec()`. (The promotion dialog is in
`qt_promote.py`.)"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog,
                               QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QPushButton, QSpinBox,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from relman.data.formats import format_names
from relman.errors import RelmanError

DEVICES = ("auto", "cpu", "cuda:0")


class ValidatingDialog(QDialog):
    """A dialog whose OK runs `values()` first and shows the error inline instead of closing."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.error_label = QLabel("")
        self.error_label.setObjectName("dialog-error")
        self.error_label.setStyleSheet("color: #c4453b;")
        self.error_label.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.result_values: dict[str, Any] | None = None

    def values(self) -> dict[str, Any]:
        raise NotImplementedError

    def accept(self) -> None:
        try:
            self.result_values = self.values()
        except RelmanError as e:
            self.error_label.setText(str(e))
            return
        super().accept()


def _path_row(edit: QLineEdit, parent: QWidget, folder: bool = True, file: bool = True,
              file_filter: str = "All files (*)") -> QWidget:
    w = QWidget(parent)
    row = QHBoxLayout(w)
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(edit, 1)
    if folder:
        b = QPushButton("Folder…", w)
        b.clicked.connect(lambda: edit.setText(QFileDialog.getExistingDirectory(parent, "Choose a folder") or edit.text()))
        row.addWidget(b)
    if file:
        b = QPushButton("File…", w)
        b.clicked.connect(lambda: edit.setText(QFileDialog.getOpenFileName(parent, "Choose a file", "", file_filter)[0]
                                               or edit.text()))
        row.addWidget(b)
    return w


class ImportDialog(ValidatingDialog):
    def __init__(self, models: Sequence[str], parent: QWidget | None = None, default_model: str = "") -> None:
        super().__init__("Import model", parent)
        self.path = QLineEdit()
        self.path.setPlaceholderText("Hugging Face folder, .safetensors, .onnx or torch weights")
        self.existing = list(models)
        self.model = QComboBox()
        self.model.setEditable(True)
        self.model.addItems(self.existing)
        self.model.setCurrentText(default_model)
        self.model.setToolTip("A new name is proposed from the folder; pick an existing model to add a version to it")
        self._proposed = default_model
        self.path.textChanged.connect(self._propose_name)
        self.new_architecture = QCheckBox("Different architecture or task under an existing model name")
        self.new_architecture.setObjectName("new-architecture")
        self.version = QLineEdit()
        self.version.setPlaceholderText("optional, e.g. 2.0.0 (default: next minor)")
        form = QFormLayout(self)
        form.addRow("Model file/folder", _path_row(self.path, self, file_filter="Models (*.safetensors *.onnx *.pt *.pth *.bin);;All files (*)"))
        form.addRow("Model name", self.model)
        form.addRow("", self.new_architecture)
        form.addRow("Version", self.version)
        form.addRow(self.error_label)
        form.addRow(self.buttons)

    def _propose_name(self, path: str) -> None:
        """A new folder gets a new model name (from its own name), unless the user typed one."""
        from relman.app.models import propose_model_name

        if not path.strip() or self.model.currentText().strip() not in ("", self._proposed):
            return
        self._proposed = propose_model_name(path.strip(), self.existing)
        self.model.setCurrentText(self._proposed)

    def values(self) -> dict[str, Any]:
        path, model = self.path.text().strip(), self.model.currentText().strip()
        if not path:
            raise RelmanError("choose a model file or folder to import")
        if not model:
            raise RelmanError("give the model a name (e.g. 'digits-vit')")
        return {"path": path, "model": model, "version": self.version.text().strip() or None,
                "new_architecture": self.new_architecture.isChecked()}


class DatasetDialog(ValidatingDialog):
    FORMATS = ("(guess from suffix)", *format_names())  # the reader table (relman.data.formats)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Register dataset", parent)
        self.path = QLineEdit()
        self.name = QLineEdit()
        self.format = QComboBox()
        self.format.addItems(list(self.FORMATS))
        self.text_col = QLineEdit("text")
        self.label_col = QLineEdit("label")
        self.group_col = QLineEdit()
        self.x_key = QLineEdit()
        self.y_key = QLineEdit()
        self.val = QDoubleSpinBox()
        self.test = QDoubleSpinBox()
        for s in (self.val, self.test):
            s.setRange(0.0, 0.9)
            s.setSingleStep(0.05)
        form = QFormLayout(self)
        form.addRow("File/folder", _path_row(self.path, self))
        form.addRow("Name", self.name)
        form.addRow("Format", self.format)
        form.addRow("Text column", self.text_col)
        form.addRow("Label column", self.label_col)
        form.addRow("Group column (fairness)", self.group_col)
        form.addRow("NPZ image key", self.x_key)
        form.addRow("NPZ label key", self.y_key)
        form.addRow("Validation share", self.val)
        form.addRow("Test share", self.test)
        form.addRow(self.error_label)
        form.addRow(self.buttons)

    def values(self) -> dict[str, Any]:
        path, name = self.path.text().strip(), self.name.text().strip()
        if not path:
            raise RelmanError("choose the dataset file or folder")
        if not name:
            raise RelmanError("give the dataset a name")
        fmt = self.format.currentText()
        return {
            "path": path, "name": name, "format": None if fmt.startswith("(") else fmt,
            "text_col": self.text_col.text().strip() or None, "label_col": self.label_col.text().strip() or None,
            "group_col": self.group_col.text().strip() or None, "x_key": self.x_key.text().strip() or None,
            "y_key": self.y_key.text().strip() or None, "val_fraction": self.val.value(),
            "test_fraction": self.test.value(),
        }


class ParamForm(QWidget):
    """A form generated from a recipe's typed parameters (relman.compress.registry.Param)."""

    def __init__(self, params: Sequence[Any], parent: QWidget | None = None, datasets: Sequence[str] = ()) -> None:
        super().__init__(parent)
        self.params = list(params)
        self.datasets = list(datasets)
        self.editors: dict[str, QWidget] = {}
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        for p in self.params:
            editor = self._dataset_editor(p) if p.name == "dataset" and p.type is str else self._editor(p)
            editor.setObjectName(f"param-{p.name}")
            editor.setToolTip(p.help)
            self.editors[p.name] = editor
            form.addRow(p.name, editor)
        if not self.params:
            form.addRow(QLabel("This recipe has no parameters."))

    def _dataset_editor(self, p: Any) -> QWidget:
        w = QComboBox()
        w.setEditable(True)
        w.addItems([""] + self.datasets)
        w.setCurrentText(str(p.default or ""))
        return w

    @staticmethod
    def _editor(p: Any) -> QWidget:
        if p.choices:
            w = QComboBox()
            w.addItems([str(c) for c in p.choices])
            if p.default is not None:
                w.setCurrentText(str(p.default))
            return w
        if p.type is bool:
            w = QCheckBox()
            w.setChecked(bool(p.default))
            return w
        if p.type is int:
            w = QSpinBox()
            w.setRange(int(p.min) if p.min is not None else -1_000_000_000, int(p.max) if p.max is not None else 1_000_000_000)
            w.setValue(int(p.default or 0))
            return w
        if p.type is float:
            w = QDoubleSpinBox()
            w.setDecimals(6)
            w.setRange(float(p.min) if p.min is not None else -1e12, float(p.max) if p.max is not None else 1e12)
            w.setSingleStep(0.05 if (p.max or 10) <= 1 else 1.0)
            w.setValue(float(p.default or 0.0))
            return w
        w = QLineEdit()
        if p.default is not None:
            w.setText(",".join(map(str, p.default)) if isinstance(p.default, (list, tuple)) else str(p.default))
        return w

    def raw_values(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in self.params:
            w = self.editors[p.name]
            if isinstance(w, QComboBox):
                out[p.name] = w.currentText()
            elif isinstance(w, QCheckBox):
                out[p.name] = w.isChecked()
            elif isinstance(w, (QSpinBox, QDoubleSpinBox)):
                out[p.name] = w.value()
            else:
                out[p.name] = w.text()  # type: ignore[attr-defined]
        return out

    def set_value(self, name: str, value: Any) -> None:
        w = self.editors[name]
        if isinstance(w, QComboBox):
            w.setCurrentText(str(value))
        elif isinstance(w, QCheckBox):
            w.setChecked(bool(value))
        elif isinstance(w, (QSpinBox, QDoubleSpinBox)):
            w.setValue(value)
        else:
            w.setText(str(value))  # type: ignore[attr-defined]


class CompressDialog(ValidatingDialog):
    """Recipe picker + a typed parameter form generated from the recipe registry."""

    def __init__(self, recipes: Sequence[Any], parents: Sequence[str], parent: QWidget | None = None,
                 datasets: Sequence[str] = ()) -> None:
        super().__init__("Compress", parent)
        self.datasets = list(datasets)
        self.dataset = QComboBox()
        self.dataset.setObjectName("eval-dataset")
        self.dataset.addItems(["(none)"] + self.datasets)
        self.dataset.setToolTip("Dataset the child is evaluated on (and calibration data where a recipe needs it)")
        self.recipes = {r.name: r for r in recipes}
        self.recipe = QComboBox()
        self.recipe.setObjectName("recipe")
        for r in recipes:
            self.recipe.addItem(f"{r.name}", r.name)
        self.parents_label = QLabel(", ".join(parents) or "(select versions in the table first)")
        self.parents = list(parents)
        self.description = QLabel("")
        self.description.setWordWrap(True)
        self.description.setObjectName("hint")
        self.device = QComboBox()
        self.device.addItems(list(DEVICES))
        self.form_holder = QVBoxLayout()
        self.form: ParamForm | None = None
        layout = QVBoxLayout(self)
        top = QFormLayout()
        top.addRow("Recipe", self.recipe)
        top.addRow("Parent version(s)", self.parents_label)
        top.addRow("Device", self.device)
        top.addRow("Evaluate on", self.dataset)
        layout.addLayout(top)
        layout.addWidget(self.description)
        layout.addLayout(self.form_holder)
        layout.addWidget(self.error_label)
        layout.addWidget(self.buttons)
        self.recipe.currentIndexChanged.connect(lambda _: self._build_form())
        self._build_form()

    def select_recipe(self, name: str) -> None:
        idx = self.recipe.findData(name)
        if idx < 0:
            raise RelmanError(f"no recipe '{name}' in this build")
        self.recipe.setCurrentIndex(idx)

    def current_recipe(self) -> Any:
        return self.recipes.get(self.recipe.currentData())

    def _build_form(self) -> None:
        if self.form is not None:
            self.form.setParent(None)
            self.form.deleteLater()
        r = self.current_recipe()
        self.form = ParamForm(r.params if r else [], self, self.datasets)
        self.form_holder.addWidget(self.form)
        if r is not None:
            needs = "several parents (a merge)" if r.multi_parent else "one parent"
            self.description.setText(f"{r.title}: {r.description or ''} Takes {needs}; formats "
                                     f"{', '.join(r.input_formats)}.")

    def values(self) -> dict[str, Any]:
        r = self.current_recipe()
        if r is None:
            raise RelmanError("no compression recipe is registered in this build")
        if not self.parents:
            raise RelmanError("select the version(s) to compress in the versions table first")
        if r.multi_parent and len(self.parents) < 2:
            raise RelmanError(f"recipe '{r.name}' merges several versions: select at least two")
        if not r.multi_parent and len(self.parents) > 1:
            raise RelmanError(f"recipe '{r.name}' takes one parent; select a single version")
        assert self.form is not None
        params = r.resolve_params(self.form.raw_values())  # RecipeError names the bad parameter
        ds = self.dataset.currentText()
        return {"recipe": r.name, "params": params, "parents": list(self.parents), "device": self.device.currentText(),
                "dataset": None if ds == "(none)" else ds}


class EvaluateDialog(ValidatingDialog):
    def __init__(self, refs: Sequence[str], datasets: Sequence[str], suites: Sequence[str],
                 parent: QWidget | None = None) -> None:
        super().__init__("Evaluate", parent)
        self.refs = list(refs)
        self.dataset = QComboBox()
        self.dataset.setObjectName("dataset")
        self.dataset.addItems(list(datasets))
        self.suite_boxes: dict[str, QCheckBox] = {}
        suites_w = QWidget()
        sl = QHBoxLayout(suites_w)
        sl.setContentsMargins(0, 0, 0, 0)
        for s in suites:
            box = QCheckBox(s)
            box.setChecked(s in ("quality", "latency", "size"))
            self.suite_boxes[s] = box
            sl.addWidget(box)
        self.device = QComboBox()
        self.device.addItems(list(DEVICES))
        form = QFormLayout(self)
        form.addRow("Versions", QLabel(", ".join(refs) or "(select versions first)"))
        form.addRow("Dataset", self.dataset)
        form.addRow("Suites", suites_w)
        form.addRow("Device", self.device)
        form.addRow(self.error_label)
        form.addRow(self.buttons)

    def values(self) -> dict[str, Any]:
        if not self.refs:
            raise RelmanError("select the version(s) to evaluate first")
        suites = [s for s, b in self.suite_boxes.items() if b.isChecked()]
        if self.suite_boxes and not suites:
            raise RelmanError("tick at least one metric suite")
        return {"refs": self.refs, "dataset": self.dataset.currentText() or None, "suites": suites or None,
                "device": self.device.currentText()}


class SimpleFormDialog(ValidatingDialog):
    """Approve / canary share / export: a few labelled fields."""

    def __init__(self, title: str, fields: Sequence[tuple[str, QWidget]], check: Callable[[dict[str, Any]], None] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(title, parent)
        self.fields = dict(fields)
        self.check = check
        form = QFormLayout(self)
        for label, w in fields:
            form.addRow(label, w)
        form.addRow(self.error_label)
        form.addRow(self.buttons)

    def values(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for label, w in self.fields.items():
            if isinstance(w, QLineEdit):
                out[label] = w.text().strip()
            elif isinstance(w, QPlainTextEdit):
                out[label] = w.toPlainText().strip()
            elif isinstance(w, (QSpinBox, QDoubleSpinBox)):
                out[label] = w.value()
            elif isinstance(w, QComboBox):
                out[label] = w.currentText()
            elif isinstance(w, QCheckBox):
                out[label] = w.isChecked()
        if self.check:
            self.check(out)
        return out


def dark_aware_align(item: QTableWidgetItem) -> QTableWidgetItem:
    item.setTextAlignment(int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter))
    return item
