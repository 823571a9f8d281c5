"""Dialogs for the actions. Each dialog only collects and checks input (`values()`); a
controller calls the app layer with them. Tests construct a dialog, fill it and call
`accept()` (or read `values()`) instead of blocking on `exec()`. (The promotion dialog is in
`qt_promote.py`.)"""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog,
                               QFormLayout, QGridLayout, QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QPushButton, QSpinBox,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from relman.data.formats import format_names
from relman.errors import RelmanError

DEVICES = ("auto", "cpu", "cuda:0")
ERROR_COLOR, SUCCESS_COLOR = "#c4453b", "#2e9d57"  # one red for refusals, one green for "done"


def task_summary(tasks: Sequence[str | None]) -> str:
    """'text-classification', or 'feature-extraction, text-classification' for a mixed
    selection, for the dialogs' Task row ('unknown' where a version records none)."""
    names = sorted({t or "unknown" for t in tasks})
    return ", ".join(names) if names else "(no version selected)"


class ValidatingDialog(QDialog):
    """A dialog whose OK runs `values()` first and shows the error inline instead of closing.
    The error is worded for the window (`relman.ui.gui_terms`): a CLI flag in it becomes the
    label of this dialog's field that sets it (`gui_fields` adds or overrides labels)."""

    gui_fields: dict[str, str] = {}

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.error_label = QLabel("")
        self.error_label.setObjectName("dialog-error")
        self.error_label.setStyleSheet(f"color: {ERROR_COLOR};")
        self.error_label.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.result_values: dict[str, Any] | None = None
        # set by Controller.run_dialog: does the work with the values; an error it raises (the
        # app layer's checks) is shown here too and the dialog stays open with its input
        self.submit: Callable[[dict[str, Any]], Any] | None = None
        self.submitted: Any = None

    def values(self) -> dict[str, Any]:
        raise NotImplementedError

    def show_error(self, text: str) -> None:
        """A refusal, in red, under the fields (naming the GUI's fields, not the CLI's flags)."""
        from relman.ui.gui_terms import in_gui_terms

        self.error_label.setStyleSheet(f"color: {ERROR_COLOR};")
        self.error_label.setText(in_gui_terms(text, self.gui_fields))

    def show_success(self, text: str) -> None:
        """Something that worked (a key made in the dialog), in green: never in the error red."""
        self.error_label.setStyleSheet(f"color: {SUCCESS_COLOR};")
        self.error_label.setText(text)

    def accept(self) -> None:
        try:
            values = self.values()
            if self.submit is not None:
                self.submitted = self.submit(values)
        except RelmanError as e:
            self.show_error(str(e))
            return
        self.result_values = values
        self.error_label.setText("")
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

    # what a column of each role is usually called (the first found is preselected)
    ROLE_NAMES = {"text": ("text", "sentence", "review", "content", "document", "prompt"),
                  "label": ("label", "labels", "class", "category", "target", "sentiment", "y"),
                  "group": ("group", "gender", "sex", "race", "region", "segment")}

    def __init__(self, parent: QWidget | None = None, existing: Sequence[str] = ()) -> None:
        super().__init__("Register dataset", parent)
        self.existing = list(existing)
        self.path = QLineEdit()
        self.name = QLineEdit()
        self.name.setObjectName("dataset-name")
        self._proposed = ""
        self.format = QComboBox()
        self.format.addItems(list(self.FORMATS))
        self.text_col = self._column_box("text", "text")
        self.label_col = self._column_box("label", "label")
        self.group_col = self._column_box("group", "")
        self.columns_hint = QLabel("")
        self.columns_hint.setObjectName("hint")
        self.columns_hint.setWordWrap(True)
        self.columns: list[str] = []
        self.path.textChanged.connect(self._read_file)
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
        form.addRow("", self.columns_hint)
        form.addRow("Text column", self.text_col)
        form.addRow("Label column", self.label_col)
        form.addRow("Group column (fairness)", self.group_col)
        form.addRow("NPZ image key", self.x_key)
        form.addRow("NPZ label key", self.y_key)
        form.addRow("Validation share", self.val)
        form.addRow("Test share", self.test)
        form.addRow(self.error_label)
        form.addRow(self.buttons)

    @staticmethod
    def _column_box(role: str, default: str) -> QComboBox:
        """An editable column chooser: the file's columns once it is read, any name typed."""
        box = QComboBox()
        box.setEditable(True)
        box.setObjectName(f"{role}-column")
        box.setCurrentText(default)
        return box

    def _read_file(self, path: str) -> None:
        """A chosen CSV/TSV/JSONL: its header offers the columns (a likely one preselected for
        each role) and its file name suggests the dataset name, unless the user typed one."""
        from relman.app.dataset_preview import peek_columns, pick_column, propose_dataset_name

        path = path.strip()
        if not path:
            return
        if self.name.text().strip() in ("", self._proposed):
            self._proposed = propose_dataset_name(path, self.existing)
            self.name.setText(self._proposed)
        self.columns = peek_columns(path)
        self.columns_hint.setText(f"Columns in the file: {', '.join(self.columns)}" if self.columns else "")
        if not self.columns:
            return
        for role, box in (("text", self.text_col), ("label", self.label_col), ("group", self.group_col)):
            typed = box.currentText().strip()
            box.clear()
            box.addItems([""] + self.columns)
            if typed in self.columns:
                box.setCurrentText(typed)
            else:
                box.setCurrentText(pick_column(self.columns, self.ROLE_NAMES[role]) or "")

    def values(self) -> dict[str, Any]:
        path, name = self.path.text().strip(), self.name.text().strip()
        if not path:
            raise RelmanError("choose the dataset file or folder")
        if not name:
            raise RelmanError("give the dataset a name")
        fmt = self.format.currentText()
        return {
            "path": path, "name": name, "format": None if fmt.startswith("(") else fmt,
            "text_col": self.text_col.currentText().strip() or None,
            "label_col": self.label_col.currentText().strip() or None,
            "group_col": self.group_col.currentText().strip() or None, "x_key": self.x_key.text().strip() or None,
            "y_key": self.y_key.text().strip() or None, "val_fraction": self.val.value(),
            "test_fraction": self.test.value(),
        }


class ParamForm(QWidget):
    """A form generated from a recipe's typed parameters (relman.compress.registry.Param)."""

    changed = Signal()  # any editor's value changed (the dialog re-checks inline)

    def __init__(self, params: Sequence[Any], parent: QWidget | None = None, datasets: Sequence[str] = ()) -> None:
        super().__init__(parent)
        self.params = list(params)
        self.datasets = list(datasets)
        self.editors: dict[str, QWidget] = {}
        form = QFormLayout(self)
        self.layout_form = form
        form.setContentsMargins(0, 0, 0, 0)
        for p in self.params:
            editor = self._dataset_editor(p) if p.name == "dataset" and p.type is str else self._editor(p)
            editor.setObjectName(f"param-{p.name}")
            editor.setToolTip(p.help)
            self.editors[p.name] = editor
            for signal in ("currentTextChanged", "toggled", "valueChanged", "textChanged"):
                if hasattr(editor, signal):
                    getattr(editor, signal).connect(lambda *_: self.changed.emit())
                    break
            form.addRow(p.name, editor)
        if not self.params:
            form.addRow(QLabel("This recipe has no parameters."))
        self.changed.connect(self.update_visibility)
        self.update_visibility()

    def applicable(self) -> list[str]:
        """Names of the parameters that apply to the current values (each Param's `shown_when`)."""
        raw = self.raw_values()
        parsed: dict[str, Any] = {}
        for p in self.params:
            try:
                parsed[p.name] = p.parse(raw[p.name])
            except RelmanError:
                parsed[p.name] = p.default
        return [p.name for p in self.params if getattr(p, "applies", lambda _v: True)(parsed)]

    def update_visibility(self) -> None:
        """Show only the parameters that apply (LoRA's under method=lora, DP's with dp on)."""
        shown = set(self.applicable())
        for name, editor in self.editors.items():
            self.layout_form.setRowVisible(editor, name in shown)

    def visible_names(self) -> list[str]:
        return [p.name for p in self.params if not self.editors[p.name].isHidden()]

    def applicable_values(self) -> dict[str, Any]:
        """The raw values of the parameters that apply; the others take their defaults."""
        shown = set(self.applicable())
        return {k: v for k, v in self.raw_values().items() if k in shown}

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


# Merges that take one parent of this format (the base comes from its pin), or that parent and
# the base: the parent of this format goes first whatever the selection order.
ADAPTER_MERGES = {"merge-adapter": "peft-adapter"}
PINNED_BASE = "(the adapter's pinned base)"


class CompressDialog(ValidatingDialog):
    """Recipe picker + a typed parameter form generated from the recipe registry.

    `formats` (ref → format) and `adapter_bases` (adapter ref → its pinned base) let the
    adapter merge take the adapter alone, offer the base as a field, and order an adapter +
    base selection by what each is (not by the order of the selection).

    `tasks` (ref → task) is shown (what the parents do, so a fine-tune of an encoder reads
    as "becomes a classifier"); the child can take a new model name (the CLI's `--model`);
    with `settings`, each recipe's last accepted parameters come back when it is picked
    again, in this dialog or the next one."""

    SETTINGS_KEY = "compress/last_params/"  # + recipe name → JSON of that recipe's raw values

    def __init__(self, recipes: Sequence[Any], parents: Sequence[str], parent: QWidget | None = None,
                 datasets: Sequence[str] = (), formats: dict[str, str] | None = None,
                 adapter_bases: dict[str, str | None] | None = None, tasks: dict[str, str | None] | None = None,
                 settings: QSettings | None = None) -> None:
        super().__init__("Compress", parent)
        self.settings = settings
        self.tasks = dict(tasks or {})
        self.formats = dict(formats or {})
        self.adapter_bases = dict(adapter_bases or {})
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
        self.task_label = QLabel(task_summary([self.tasks.get(r) for r in self.parents]) if self.parents else "")
        self.task_label.setObjectName("task")
        self.child_model = QLineEdit()
        self.child_model.setObjectName("child-model")
        self.child_model.setPlaceholderText("(the parent's model)")
        self.child_model.setToolTip("Store the child under a new model name (relman compress --model), e.g. an "
                                    "encoder fine-tuned into a classifier")
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
        top.addRow("Task", self.task_label)
        self.base = QComboBox()
        self.base.setObjectName("merge-base")
        self.base.setToolTip("The base the adapter is merged into: its pinned base unless you name it")
        self.base_label = QLabel("Base to merge into")
        top.addRow(self.base_label, self.base)
        top.addRow("Device", self.device)
        top.addRow("Evaluate on", self.dataset)
        top.addRow("New model name", self.child_model)
        layout.addLayout(top)
        layout.addWidget(self.description)
        layout.addLayout(self.form_holder)
        layout.addWidget(self.error_label)
        layout.addWidget(self.buttons)
        self.recipe.currentIndexChanged.connect(lambda _: self._build_form())
        fitting = [r.name for r in recipes if bool(r.multi_parent) == (len(self.parents) > 1)
                   or self._adapter_merge_fits(r.name)]
        if self._adapter_merge_fits("merge-adapter") and "merge-adapter" in self.recipes:
            fitting.insert(0, "merge-adapter")  # an adapter selected: merging it is what it is for
        if fitting and self.recipe.currentData() not in fitting:
            self.recipe.setCurrentIndex(self.recipe.findData(fitting[0]))  # one that takes this selection
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
        self.error_label.setText("")  # the previous recipe's error is not this one's
        self._fill_base(r)
        self.form = ParamForm(r.params if r else [], self, self.datasets)
        self.form_holder.addWidget(self.form)
        if r is not None:
            self._restore_params(r.name)
        self.form.changed.connect(self._check_params)
        if r is not None:
            needs = "several parents (a merge)" if r.multi_parent else "one parent"
            becomes = ""
            if r.name == "finetune" and "feature-extraction" in {self.tasks.get(p) for p in self.parents}:
                becomes = (" This encoder becomes a classifier of the dataset's labels: give it a new model name "
                           "below if it should not stay a version of the encoder.")
            self.description.setText(f"{r.title}: {r.description or ''} Takes {needs}; formats "
                                     f"{', '.join(r.input_formats)}.{becomes}")

    # -- remembered parameters (QSettings) ---------------------------------------------------------
    def _restore_params(self, recipe: str) -> None:
        """The values this recipe was last accepted with (a stored value the recipe no longer
        takes, or no longer accepts, is skipped)."""
        if self.settings is None or self.form is None:
            return
        try:
            stored = json.loads(str(self.settings.value(self.SETTINGS_KEY + recipe, "") or "{}"))
        except ValueError:
            return
        if not isinstance(stored, dict):
            return
        params = {p.name: p for p in self.form.params}
        for name, value in stored.items():
            if name not in params:
                continue
            try:
                params[name].parse(value)
            except RelmanError:
                continue
            self.form.set_value(name, value)
        self.form.update_visibility()

    def remember_params(self) -> None:
        r = self.current_recipe()
        if self.settings is None or self.form is None or r is None:
            return
        self.settings.setValue(self.SETTINGS_KEY + r.name, json.dumps(self.form.raw_values()))

    def accept(self) -> None:
        super().accept()
        if self.result_values is not None:
            self.remember_params()

    # -- the adapter merge ---------------------------------------------------------------------
    def _adapters(self, fmt: str) -> list[str]:
        return [p for p in self.parents if self.formats.get(p) == fmt]

    def _adapter_merge_fits(self, name: str) -> bool:
        fmt = ADAPTER_MERGES.get(name)
        return fmt is not None and len(self._adapters(fmt)) == 1 and len(self.parents) <= 2

    def _fill_base(self, r: Any) -> None:
        """The base field: shown for the adapter merge only; the pinned base first, a selected
        base (the other selected version) preset."""
        show = r is not None and r.name in ADAPTER_MERGES
        self.base.setVisible(show)
        self.base_label.setVisible(show)
        self.base.clear()
        if not show:
            return
        adapters = self._adapters(ADAPTER_MERGES[r.name])
        pinned = self.adapter_bases.get(adapters[0]) if adapters else None
        self.base.addItem(PINNED_BASE + (f": {pinned}" if pinned else ""), None)
        for ref in self.parents:
            if ref not in adapters:
                self.base.addItem(ref, ref)
                self.base.setCurrentIndex(self.base.count() - 1)
        if pinned and self.base.findData(pinned) < 0:
            self.base.addItem(pinned, pinned)

    def adapter_merge_parents(self, name: str) -> list[str]:
        """[adapter] or [adapter, base], whatever order they were selected in."""
        adapters = self._adapters(ADAPTER_MERGES[name])
        if len(adapters) != 1 or len(self.parents) > 2:
            raise RelmanError(f"recipe '{name}' merges one LoRA adapter into its base: select the adapter "
                              "(and, if you like, its base); the base then comes from the field below")
        base = self.base.currentData()
        return [adapters[0]] + ([str(base)] if base else [])

    def _check_params(self) -> None:
        """Inline: each edit is parsed as the CLI parses `--param` (the recipe's typed
        parameters); the error shows at once and goes when the value is fixed."""
        r = self.current_recipe()
        if r is None or self.form is None:
            return
        try:
            r.resolve_params(self.form.applicable_values())
        except RelmanError as e:
            self.show_error(str(e))
            return
        self.error_label.setText("")

    def values(self) -> dict[str, Any]:
        r = self.current_recipe()
        if r is None:
            raise RelmanError("no compression recipe is registered in this build")
        if not self.parents:
            raise RelmanError("select the version(s) to compress in the versions table first")
        if r.name in ADAPTER_MERGES:
            parents = self.adapter_merge_parents(r.name)
            assert self.form is not None
            params = r.resolve_params(self.form.applicable_values())
            ds = self.dataset.currentText()
            return {"recipe": r.name, "params": params, "parents": parents, "device": self.device.currentText(),
                    "dataset": None if ds == "(none)" else ds, "model": self.child_model_name()}
        if r.multi_parent and len(self.parents) < 2:
            raise RelmanError(f"recipe '{r.name}' merges several versions: select at least two")
        if not r.multi_parent and len(self.parents) > 1:
            raise RelmanError(f"recipe '{r.name}' takes one parent; select a single version")
        assert self.form is not None
        params = r.resolve_params(self.form.applicable_values())  # RecipeError names the bad parameter
        ds = self.dataset.currentText()
        return {"recipe": r.name, "params": params, "parents": list(self.parents), "device": self.device.currentText(),
                "dataset": None if ds == "(none)" else ds, "model": self.child_model_name()}

    def child_model_name(self) -> str | None:
        """The new model name typed (checked against the catalog's name rule now), or None."""
        name = self.child_model.text().strip()
        if not name:
            return None
        from relman.names import check_name

        return check_name(name, "new model name")


class EvaluateDialog(ValidatingDialog):
    """Versions, dataset, the suites that apply to their task (ticked: the task's defaults)
    and, for fidelity, the version to compare with (default: each version's own parent)."""

    def __init__(self, refs: Sequence[str], datasets: Sequence[str], suites: Sequence[str],
                 parent: QWidget | None = None, *, defaults: Sequence[str] = ("quality", "latency", "size"),
                 fidelity_parents: Sequence[str] = (), not_applicable: Sequence[str] = (),
                 tasks: Sequence[str | None] = ()) -> None:
        super().__init__("Evaluate", parent)
        self.refs = list(refs)
        self.task_label = QLabel(task_summary(tasks) if tasks else "")
        self.task_label.setObjectName("task")
        self.dataset = QComboBox()
        self.dataset.setObjectName("dataset")
        self.dataset.addItems(list(datasets))
        self.suite_boxes: dict[str, QCheckBox] = {}
        suites_w = QWidget()
        sl = QGridLayout(suites_w)
        sl.setContentsMargins(0, 0, 0, 0)
        for i, s in enumerate(suites):
            box = QCheckBox(s)
            box.setObjectName(f"suite-{s}")
            box.setChecked(s in defaults)
            box.setToolTip(SUITE_TIPS.get(s, f"the '{s}' metric suite"))
            self.suite_boxes[s] = box
            sl.addWidget(box, i // 4, i % 4)
        self.parent_ref = QComboBox()
        self.parent_ref.setObjectName("fidelity-parent")
        self.parent_ref.addItem("(each version's own parent)", None)
        for ref in fidelity_parents:
            self.parent_ref.addItem(ref, ref)
        self.parent_ref.setToolTip("Fidelity compares each version's outputs with this version's")
        fid = self.suite_boxes.get("fidelity")
        if fid is not None:
            fid.toggled.connect(self.parent_ref.setEnabled)
            self.parent_ref.setEnabled(fid.isChecked())
        self.device = QComboBox()
        self.device.addItems(list(DEVICES))
        form = QFormLayout(self)
        form.addRow("Versions", QLabel(", ".join(refs) or "(select versions first)"))
        form.addRow("Task", self.task_label)
        form.addRow("Dataset", self.dataset)
        form.addRow("Suites", suites_w)
        if not_applicable:
            hint = QLabel(f"Not offered for this task: {', '.join(not_applicable)}")
            hint.setObjectName("hint")
            hint.setWordWrap(True)
            form.addRow("", hint)
        form.addRow("Fidelity against", self.parent_ref)
        form.addRow("Device", self.device)
        form.addRow(self.error_label)
        form.addRow(self.buttons)

    def values(self) -> dict[str, Any]:
        if not self.refs:
            raise RelmanError("select the version(s) to evaluate first")
        suites = [s for s, b in self.suite_boxes.items() if b.isChecked()]
        if self.suite_boxes and not suites:
            raise RelmanError("tick at least one metric suite")
        parent = self.parent_ref.currentData() if "fidelity" in suites else None
        ds = self.dataset.currentText()
        return {"refs": self.refs, "dataset": None if ds in ("", "(none)") else ds, "suites": suites or None,
                "device": self.device.currentText(), "parent": parent}


SUITE_TIPS = {
    "quality": "Accuracy / F1 (classifiers) or the task's quality measure on the dataset's labels",
    "latency": "Latency percentiles and throughput at the batch sizes of the plan",
    "size": "Size on disk and parameter count",
    "memory": "Peak memory while loading and running",
    "fidelity": "How closely the outputs follow another version's (agreement or cosine)",
    "robustness": "Quality under perturbed inputs",
    "calibration": "How well confidence matches accuracy (ECE)",
    "fairness": "Quality per group (needs the dataset's group column)",
}


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
