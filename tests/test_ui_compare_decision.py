"""Issue 28, item 6 (part): Compare supports a decision. A 0.3 MB LoRA adapter is plotted at
its deployable size (its own bytes plus its base's), not on the size front by itself;
"production" appears once in the legend; the axis lists are grouped (quality, speed, size)
and sorted, with readable names as tooltips."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings, Qt  # noqa: E402

from relman.catalog import Metric  # noqa: E402


@pytest.fixture
def window(qtbot, catalog, catalog_path, tmp_path):
    from relman.app.release import set_policy
    from relman.ui.qt_main import MainWindow

    (tmp_path / "w").mkdir()
    big, small = tmp_path / "w" / "model.safetensors", tmp_path / "w" / "adapter_model.safetensors"
    big.write_bytes(b"b" * 2_000_000)
    small.write_bytes(b"a" * 30_000)
    base = catalog.add_version("bert", {"model.safetensors": big}, format="hf", task="text-classification")
    adapter = catalog.add_version(
        "bert", {"adapter_model.safetensors": small}, format="peft-adapter", task="text-classification",
        recipe={"name": "finetune", "params": {"method": "lora"}}, parents=[(base.id, None)], relation="finetune",
        meta={"adapter": {"base_ref": base.ref, "base_manifest_sha256": base.manifest_sha256}})
    for v, acc, lat in ((base, 0.80, 3.0), (adapter, 0.86, 3.1)):
        catalog.add_metrics(v.id, [Metric("quality", "accuracy", acc), Metric("latency", "latency_p50_ms", lat),
                                   Metric("quality", "zz_custom_score", 1.0)])
    set_policy(catalog, "bert", {"gates": {"candidate": [], "staging": [], "production": []}})
    from relman.app.release import promote

    for phase in ("candidate", "staging", "production"):
        promote(catalog, base.id, phase, why="test", who="tester", override=True)
    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat),
                   run_jobs=False)
    qtbot.addWidget(w)
    w.show()
    yield w, base, adapter
    w.shutdown()


def test_adapter_is_plotted_at_its_deployable_size_and_production_is_listed_once(window):
    w, base, adapter = window
    compare = w.show_view("compare")
    panel = compare.size_panel
    assert panel.x_combo.currentText() == "deployable_size_mb"
    rows = {v.id: v for v in panel._rows}
    assert rows[adapter.id].value("deployable_size_mb") == pytest.approx((30_000 + 2_000_000) / 1e6, rel=0.05)
    assert rows[adapter.id].value("size_mb") < 0.1  # its own bytes alone: what the old plot showed
    labels = [label.text for _sample, label in panel.legend.items]
    assert labels.count("production") == 1, labels


def test_metric_lists_are_grouped_and_sorted_with_readable_names(window):
    w, _base, _adapter = window
    compare = w.show_view("compare")
    combo = compare.latency_panel.x_combo
    texts = [combo.itemText(i) for i in range(combo.count())]
    assert texts.index("accuracy") < texts.index("latency_p50_ms") < texts.index("deployable_size_mb")
    assert texts.index("zz_custom_score") > texts.index("params")  # an unknown key goes to the last group (other)
    assert texts[:2] == ["accuracy", ""]  # a separator between groups
    i = combo.findText("latency_p50_ms")
    assert combo.itemData(i, Qt.ItemDataRole.ToolTipRole) == "latency p50 (ms)"
    # the user picks an axis from the grouped list and the plot follows
    combo.setCurrentIndex(combo.findText("deployable_size_mb"))
    combo.activated.emit(combo.currentIndex())
    assert compare.latency_panel.plot.getAxis("bottom").labelText == "deployable_size_mb"
