"""Issue 28, item 6 and "side by side": Compare supports a release decision, and opens from a
selection in any view.

A real catalog: a production base with stored intervals (Wilson for accuracy), a pruned child
whose latency was timed paired against the base (its parent and production), a quantised
grandchild timed only against its parent (so its ratio to production is *chained*), a LoRA
adapter that needs its base, a causal LM, and ~70 assorted metric keys. The user opens
Compare, reads the plots, selects versions in the table and presses "Compare selected".
"""

from __future__ import annotations

import math

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtWidgets import QToolBar  # noqa: E402

from relman.catalog import Metric  # noqa: E402

EXTRA_KEYS = [f"{stem}_{i}" for i in range(14) for stem in ("zz_probe", "f1_slice", "latency_p90_ms@b", "size_part")]


def _write(folder, name: str, n: int):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(bytes([7]) * n)
    return path


@pytest.fixture
def family(catalog, tmp_path):
    from relman.app.release import promote, set_policy

    w = tmp_path / "w"
    base = catalog.add_version("bert", {"model.safetensors": _write(w / "b", "model.safetensors", 2_000_000)},
                               format="hf", task="text-classification")
    pruned = catalog.add_version("bert", {"model.safetensors": _write(w / "p", "model.safetensors", 1_000_000)},
                                 format="hf", task="text-classification", recipe={"name": "prune-magnitude"},
                                 parents=[(base.id, None)], relation="compress")
    quant = catalog.add_version("bert", {"model.safetensors": _write(w / "q", "model.safetensors", 500_000)},
                                format="hf", task="text-classification", recipe={"name": "quantize-dynamic"},
                                parents=[(pruned.id, None)], relation="compress")
    adapter = catalog.add_version(
        "bert", {"adapter_model.safetensors": _write(w / "a", "adapter_model.safetensors", 30_000)},
        format="peft-adapter", task="text-classification", recipe={"name": "finetune", "params": {"method": "lora"}},
        parents=[(base.id, None)], relation="finetune",
        meta={"adapter": {"base_ref": base.ref, "base_manifest_sha256": base.manifest_sha256}})
    # an ensemble of the adapter and its own base: ships the ensemble file, the adapter and the base once
    ensemble = catalog.add_version("bert", {"ensemble.json": _write(w / "e", "ensemble.json", 1_000)},
                                   format="ensemble", task="text-classification", recipe={"name": "ensemble"},
                                   parents=[(adapter.id, None), (base.id, None)], relation="ensemble",
                                   meta={"parents": [adapter.ref, base.ref], "parent_weights": [0.5, 0.5]})
    # an adapter whose pinned base is not in this catalog: it cannot be deployed from here
    orphan = catalog.add_version(
        "bert", {"adapter_model.safetensors": _write(w / "o", "adapter_model.safetensors", 20_000)},
        format="peft-adapter", task="text-classification", recipe={"name": "finetune"},
        meta={"adapter": {"base_ref": "elsewhere@1.0.0", "base_manifest_sha256": "0" * 64, "base_version_id": 999}})
    lm = catalog.add_version("tiny-lm", {"model.safetensors": _write(w / "l", "model.safetensors", 40_000)},
                             format="hf", task="causal-lm")
    conditions = {"batch_size": 1, "seq_len": 128, "timer": "perf_counter", "load_avg_1m": 1.9}

    def acc(value: float, lo: float, hi: float) -> Metric:
        return Metric("quality", "accuracy", value, {"interval": [lo, hi], "interval_level": 0.95, "method": "Wilson"})

    def ratio(scope: str, value: float, lo: float, hi: float, ref: str) -> Metric:
        return Metric("latency", f"latency_p50_ratio_vs_{scope}", value,
                      {**conditions, "interval": [lo, hi], "interval_level": 0.95, "reference": ref})

    for v in (ensemble, orphan):
        catalog.add_metrics(v.id, [acc(0.81, 0.77, 0.85)])
    catalog.add_metrics(base.id, [acc(0.80, 0.76, 0.84), Metric("latency", "latency_p50_ms", 3.0, conditions)])
    # the pruned child was timed with its parent, which is production: both scopes, one figure
    catalog.add_metrics(pruned.id, [acc(0.78, 0.74, 0.82), ratio("parent", 0.70, 0.65, 0.76, base.ref),
                                    ratio("production", 0.70, 0.65, 0.76, base.ref),
                                    Metric("latency", "latency_p50_ms", 4.2, {**conditions, "load_avg_1m": 5.5})])
    catalog.add_metrics(quant.id, [acc(0.75, 0.71, 0.79), ratio("parent", 0.50, 0.45, 0.56, pruned.ref)])
    catalog.add_metrics(adapter.id, [acc(0.86, 0.82, 0.90), ratio("parent", 1.10, 1.00, 1.20, base.ref)]
                        + [Metric("extra", k, float(i)) for i, k in enumerate(EXTRA_KEYS)])
    set_policy(catalog, "bert", {"gates": {"candidate": [], "staging": [], "production": []}})
    for phase in ("candidate", "staging", "production"):
        promote(catalog, base.id, phase, why="test", who="tester", override=True)
    return {"base": base, "pruned": pruned, "quant": quant, "adapter": adapter, "lm": lm, "ensemble": ensemble,
            "orphan": orphan}


@pytest.fixture
def window(qtbot, family, catalog_path, tmp_path):
    from relman.ui.qt_main import MainWindow

    w = MainWindow(catalog_path, settings=QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat),
                   run_jobs=False)
    qtbot.addWidget(w)
    w.resize(1280, 800)
    w.show()
    yield w
    w.shutdown()


def _points(panel) -> dict[int, tuple[float, float]]:
    out = {}
    for item in panel.phase_items.values():
        xs, ys = item.getData()
        for x, y, vid in zip(xs, ys, item.data["data"]):
            out[int(vid)] = (float(x), float(y))
    return out


def test_error_bars_show_the_stored_intervals(window, family):
    compare = window.show_view("compare")
    panel = compare.size_panel
    assert panel.y_combo.currentText() == "accuracy"
    assert panel.errors.isVisible()
    assert panel.error_bounds[family["base"].id][2:] == pytest.approx((0.76, 0.84))
    assert panel.error_bounds[family["adapter"].id][2:] == pytest.approx((0.82, 0.90))
    # what the bar item draws: for each point, y - bottom and y + top are the stored bounds
    opts = panel.errors.opts
    drawn = {round(float(y), 6): (float(y - b), float(y + t)) for y, b, t in zip(opts["y"], opts["bottom"], opts["top"])}
    assert drawn[0.8] == pytest.approx((0.76, 0.84)) and drawn[0.75] == pytest.approx((0.71, 0.79))
    # hovering a point tells the interval too
    tip = panel._tip(*_points(panel)[family["base"].id], family["base"].id)
    assert "95 % interval 0.76 – 0.84" in tip


def test_latency_axis_is_the_ratio_vs_production_chained_where_not_measured(window, family):
    from relman.ui.paired_latency import RATIO_KEY

    compare = window.show_view("compare")
    panel = compare.latency_panel
    assert panel.x_combo.currentText() == RATIO_KEY  # the default: comparable across versions
    pts = _points(panel)
    assert pts[family["base"].id][0] == pytest.approx(1.0)  # production is the reference
    assert pts[family["pruned"].id][0] == pytest.approx(0.70)  # measured paired against production
    assert pts[family["adapter"].id][0] == pytest.approx(1.10)  # its parent is production: one hop
    # the grandchild was timed only against its parent: 0.70 × 0.50, interval combined in log space
    assert pts[family["quant"].id][0] == pytest.approx(0.35)
    down = math.hypot(math.log(0.70 / 0.65), math.log(0.50 / 0.45))
    up = math.hypot(math.log(0.76 / 0.70), math.log(0.56 / 0.50))
    lo, hi = panel.error_bounds[family["quant"].id][:2]
    assert (lo, hi) == pytest.approx((0.35 * math.exp(-down), 0.35 * math.exp(up)))
    assert panel.error_bounds[family["pruned"].id][:2] == pytest.approx((0.65, 0.76))  # as stored
    # the label and the tooltip say so
    assert "chained" in panel.plot.getAxis("bottom").labelText and "production" in panel.x_title
    tip = panel._tip(*pts[family["quant"].id], family["quant"].id)
    assert "chained over 2 paired measurements" in tip and family["pruned"].ref in tip
    assert "measured paired against " + family["base"].ref in panel._tip(*pts[family["pruned"].id],
                                                                          family["pruned"].id)
    # the per-parent ratio (not comparable) is still offered when the user picks it
    assert panel.x_combo.findText("latency_p50_ratio_vs_parent") >= 0


def test_adapter_is_plotted_with_its_base_and_production_is_in_the_legend_once(window, family):
    compare = window.show_view("compare")
    panel = compare.size_panel
    assert panel.x_combo.currentText() == "deployable_size_mb"
    pts = _points(panel)
    assert pts[family["adapter"].id][0] == pytest.approx((30_000 + 2_000_000) / 1e6, rel=0.02)
    assert pts[family["quant"].id][0] == pytest.approx(0.5, rel=0.02)  # a whole model: its own bytes
    assert pts[family["ensemble"].id][0] == pytest.approx((1_000 + 30_000 + 2_000_000) / 1e6, rel=0.02)
    assert family["orphan"].id not in pts  # its base is not here: no size rather than a small one
    tip = panel._tip(*pts[family["adapter"].id], family["adapter"].id)
    assert "what it runs with: " + family["base"].ref in tip
    # the adapter is not on the size front: the 0.5 MB quantised model is smaller and deployable alone
    assert family["quant"].id in panel.front_ids
    for p in (compare.size_panel, compare.latency_panel):
        labels = [label.text for _sample, label in p.legend.items]
        assert labels.count("production") == 1, labels


def test_axis_chooser_is_grouped_and_sorted_with_readable_names(window, family):
    from relman.ui.snapshot import metric_group

    compare = window.show_view("compare")
    combo = compare.size_panel.y_combo
    texts = [combo.itemText(i) for i in range(combo.count())]
    assert len([t for t in texts if t]) > 60
    groups: list[list[str]] = [[]]
    for t in texts:
        if t:
            groups[-1].append(t)
        else:
            groups.append([])
    assert [metric_group(g[0]) for g in groups] == ["quality", "speed", "size", "other"]
    for g in groups:
        assert len({metric_group(t) for t in g}) == 1
        tail = g[4:]  # after the few leading (most used) names, alphabetical
        assert tail == sorted(tail), g
    i = combo.findText("latency_p50_ratio_vs_parent")
    assert combo.itemData(i, Qt.ItemDataRole.ToolTipRole) == "latency p50, ratio vs parent"


def test_board_cards_show_the_paired_ratio_and_absolute_latency_only_with_conditions(window, family):
    board = window.show_view("board")
    _phase, card = board.find_card(family["pruned"].id)
    assert "latency ×0.70 vs production [0.65–0.76]" in card.metrics_label.text()
    assert "ms" not in card.metrics_label.text()  # no absolute time among the decision figures
    assert card.absolute_label.isVisible()
    assert "4.2 ms (b1 s128, perf_counter, load 5.5)" in card.absolute_label.text()
    _phase, prod = board.find_card(family["base"].id)
    assert "production reference" in prod.metrics_label.text()


def _click_row(qtbot, window, version_id: int, ctrl: bool = False) -> None:
    view = window.show_view("versions")
    proxy = view.proxy
    row = next(r for r in range(proxy.rowCount()) if proxy.version_id(r) == version_id)
    rect = view.table.visualRect(proxy.index(row, 0))
    qtbot.mouseClick(view.table.viewport(), Qt.MouseButton.LeftButton,
                     Qt.KeyboardModifier.ControlModifier if ctrl else Qt.KeyboardModifier.NoModifier, rect.center())


def test_compare_selected_opens_compare_with_exactly_the_selection(qtbot, window, family):
    quant, adapter = family["quant"], family["adapter"]
    _click_row(qtbot, window, quant.id)
    _click_row(qtbot, window, adapter.id, ctrl=True)
    qtbot.waitUntil(lambda: window.selection.ids == [quant.id, adapter.id])
    table = window.versions.table
    action = window.actions_by_key["compare-selected"]
    assert table.contextMenuPolicy() == Qt.ContextMenuPolicy.ActionsContextMenu and action in table.actions()
    assert action in window.tree.actions()
    for phase in ("draft", "production"):  # the release board's columns too
        assert action in window.board.columns[phase].actions()
    toolbar = window.findChild(QToolBar, "actions-toolbar")
    qtbot.mouseClick(toolbar.widgetForAction(action), Qt.MouseButton.LeftButton)
    compare = window.view("compare")
    qtbot.waitUntil(lambda: window.current_view_name() == "compare")
    assert compare.pinned_bar.isVisible() and quant.ref in compare.pinned_label.text()
    for panel in (compare.size_panel, compare.latency_panel):
        assert set(_points(panel)) == {quant.id, adapter.id}
    assert compare.table.columnCount() == 2
    # the front is of these two only; "Show all versions" brings the model back
    qtbot.mouseClick(compare.show_all_button, Qt.MouseButton.LeftButton)
    assert not compare.pinned_bar.isVisible()
    assert set(_points(compare.size_panel)) == {family[k].id for k in ("base", "pruned", "quant", "adapter",
                                                                        "ensemble")}


def test_compare_selected_needs_two_versions_and_says_so(qtbot, window, family):
    _click_row(qtbot, window, family["quant"].id)
    qtbot.waitUntil(lambda: window.selection.ids == [family["quant"].id])
    window.actions_by_key["compare-selected"].trigger()
    assert any(level == "error" and "two or more" in text for level, text in window.messages)
    assert window.current_view_name() == "versions"


def test_generate_with_selected_ticks_exactly_the_selected_language_models(qtbot, window, family):
    gen = window.show_view("generate")
    for i in range(gen.versions.count()):  # the user had ticked something else by hand
        gen.versions.item(i).setCheckState(Qt.CheckState.Unchecked)
    window.set_selection([family["lm"].id])
    tree = window.tree
    assert window.actions_by_key["generate-selected"] in tree.actions()
    window.show_view("versions")
    window.actions_by_key["generate-selected"].trigger()
    qtbot.waitUntil(lambda: window.current_view_name() == "generate")
    assert gen.chosen_refs() == [family["lm"].ref]
    # nothing generative selected: a clear message, nothing ticked changes
    window.set_selection([family["quant"].id])
    window.actions_by_key["generate-selected"].trigger()
    assert any(level == "error" and "causal language model" in text for level, text in window.messages)
    assert gen.chosen_refs() == [family["lm"].ref]
