"""Issue 28, item 2: merging a LoRA adapter from the GUI. With the adapter alone selected the
Compress dialog offers merge-adapter (one parent: the base comes from the adapter's pin, shown
in a "Base to merge into" field); with adapter and base selected — in either order — the job
gets the adapter first and the base second, as the recipe requires."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings  # noqa: E402

from test_ui_adapters import _adapter_family  # noqa: E402
from ui_support import accept_with  # noqa: E402


@pytest.fixture
def window(qtbot, catalog, catalog_path, tmp_path):
    from relman.ui.qt_main import MainWindow

    fam = _adapter_family(catalog, tmp_path)
    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat),
                   run_jobs=False)
    qtbot.addWidget(w)
    w.show()
    yield w, fam
    w.shutdown()


def select(w, ids):
    versions = w.show_view("versions")
    versions.select_rows(set(ids))
    if sorted(w.selection.ids) != sorted(ids):
        w.selection.set(list(ids))
    assert sorted(w.selection.ids) == sorted(ids)


def queued_parents(catalog) -> list[int]:
    job = catalog.query("SELECT kind, params FROM jobs ORDER BY id DESC")[0]
    params = json.loads(job["params"])
    ids = params.get("parent_version_ids") or [params.get("version_id") or params.get("parent_version_id")]
    return [int(i) for i in ids]


def test_the_adapter_alone_merges_into_its_pinned_base(window, catalog):
    from relman.ui.qt_dialogs import PINNED_BASE, CompressDialog

    w, (base, adapter) = window
    select(w, [adapter.id])
    shown = {}

    def fill(d):
        assert isinstance(d, CompressDialog)
        assert d.recipe.currentData() == "merge-adapter"  # what an adapter is selected for
        shown["base_items"] = [d.base.itemText(i) for i in range(d.base.count())]
        shown["visible"] = not d.base.isHidden()
    w.dialog_runner = accept_with(fill)
    w.actions_by_key["compress"].trigger()
    assert shown["visible"] and shown["base_items"][0] == f"{PINNED_BASE}: {base.ref}"
    assert not [m for m in w.messages if "at least two" in m[1]], w.messages
    assert queued_parents(catalog) == [adapter.id]


@pytest.mark.parametrize("order", ["base-first", "adapter-first"])
def test_adapter_and_base_are_ordered_by_what_they_are(window, catalog, order):
    from relman.ui.qt_dialogs import CompressDialog

    w, (base, adapter) = window
    ids = [base.id, adapter.id] if order == "base-first" else [adapter.id, base.id]
    select(w, ids)

    def fill(d):
        assert isinstance(d, CompressDialog)
        d.recipe.setCurrentIndex(d.recipe.findData("merge-adapter"))
        assert d.base.currentData() == base.ref  # the selected base, preset in the field
    w.dialog_runner = accept_with(fill)
    w.actions_by_key["compress"].trigger()
    assert queued_parents(catalog) == [adapter.id, base.id], catalog.query("SELECT params FROM jobs")


def test_two_bases_are_refused_in_one_line(qtbot):
    from relman.compress.registry import get_recipe
    from relman.errors import RelmanError
    from relman.ui.qt_dialogs import CompressDialog

    d = CompressDialog([get_recipe("merge-adapter")], ["m@1", "m@2"], formats={"m@1": "hf", "m@2": "hf"})
    qtbot.addWidget(d)
    with pytest.raises(RelmanError, match="merges one LoRA adapter into its base"):
        d.values()
