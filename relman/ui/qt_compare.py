"""Compare: scatter plots (axes selectable among stored metrics) with the Pareto front and
the production version marked, a metric-over-versions line plot and a side-by-side table.

Plot items are created once and updated with `setData` (pyqtgraph's fast path): one scatter
item per phase, one for the production star, one for the selection ring, one Pareto line.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QLabel, QPushButton, QSplitter, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from relman.ui.paired_latency import RATIO_KEY
from relman.ui.qt_models import PHASE_COLORS, fmt_metric
from relman.ui.snapshot import PHASE_ORDER, Snapshot, VersionRow, lower_is_better, metric_title

ALL_MODELS = "All models"


def pareto_indices(x: np.ndarray, y: np.ndarray, x_lower_better: bool, y_lower_better: bool) -> np.ndarray:
    """Indices of the non-dominated points, ordered by x (vectorised `snapshot.pareto_front`)."""
    xx = x if x_lower_better else -x
    yy = y if y_lower_better else -y
    order = np.lexsort((yy, xx))  # by x, then y
    ys = yy[order]
    best_before = np.concatenate(([np.inf], np.minimum.accumulate(ys)[:-1]))
    front = order[ys < best_before]
    return front[np.argsort(x[front], kind="stable")]


def narrow(combo: QComboBox, chars: int = 10) -> None:
    """A combo whose width does not follow its longest item (a laptop screen keeps its room)."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(chars)


def fill_metric_combo(combo: QComboBox, names: Sequence[str]) -> None:
    """The metric keys grouped (quality, speed, size, other) and sorted, a separator between
    groups, each with its readable name as the tooltip (the raw key stays the item's text:
    it is what policies and the CLI use)."""
    from relman.ui.snapshot import grouped_metrics, metric_title

    combo.clear()
    for i, (_group, group_names) in enumerate(grouped_metrics(names)):
        if i:
            combo.insertSeparator(combo.count())
        for n in group_names:
            combo.addItem(n)
            combo.setItemData(combo.count() - 1, metric_title(n), Qt.ItemDataRole.ToolTipRole)


def is_performance(metric: str) -> bool:
    """Speed measures (higher is better, but not quality): never the default quality axis."""
    return any(t in metric.lower() for t in ("throughput", "_sps", "per_s", "tokens_per"))


def task_quality_metric(snap: Snapshot | None, model: str | None) -> str | None:
    """The quality metric of `model`'s task from the task table (accuracy, perplexity, entity_f1),
    or its fidelity measure (cosine for embeddings) when the task has no quality metric."""
    from relman.tasks.specs import find_task

    if snap is None or not model or model == ALL_MODELS:
        return None
    tasks = {v.task for v in snap.of_model(model)}
    spec = find_task(next(iter(tasks)) if len(tasks) == 1 else None)
    if spec is None:
        return None
    return spec.quality_metric[0] if spec.quality_metric else spec.fidelity_metric


# Language-model measures, offered first on the axes when the model is a causal LM: quality
# (perplexity, bits per byte, multiple-choice accuracy, exact match of generations) and
# generation speed (time to first token, decode tokens/s, their paired ratios).
LM_METRICS = ("perplexity", "bits_per_byte", "acc", "exact_match", "ttft", "decode_tokens_per_s",
              "generate_tokens_per_s")
# The latency plot's X for a causal LM: the paired ratio of time to first token when measured.
LM_COST_AXES = ("ttft_ratio_vs_parent", "ttft_p50_ms")


def is_causal_model(snap: Snapshot | None, model: str | None) -> bool:
    if snap is None or not model or model == ALL_MODELS:
        return False
    return {v.task for v in snap.of_model(model)} == {"causal-lm"}


def lm_first(names: Sequence[str]) -> list[str]:
    """`names` with the language-model measures first (in LM_METRICS order), the rest after."""
    def rank(n: str) -> int:
        return next((i for i, key in enumerate(LM_METRICS) if n.startswith(key)), len(LM_METRICS))
    return sorted(names, key=rank)


def table_rank(metric: str, quality: str | None) -> int:
    if metric == quality:
        return 0
    if not lower_is_better(metric) and not is_performance(metric) and metric != "params":
        return 1  # other quality measures (f1, agreement…)
    if metric in ("size_mb", "params"):
        return 2
    return 3  # latency, memory, throughput…


def fmt_table_value(value: float | None) -> str:
    """Counts as integers with thousands separators (18,220, not 1.822e+04); others as metrics."""
    if value is None:
        return ""
    if float(value).is_integer() and abs(value) >= 1000:
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.1f}"
    return fmt_metric(value)


# The latency plot's X, best first: the ratio to production (comparable across versions), the
# ratio to each version's own parent (paired, but each against a different model), absolute.
LATENCY_AXES = (RATIO_KEY, "latency_p50_ratio_vs_parent")
DERIVED_AXES = (RATIO_KEY,)


def axis_label(metric: str, rows: Sequence[VersionRow]) -> str:
    """The axis title: the readable name, and whether any shown figure was chained."""
    label = metric_title(metric) if metric else ""
    if any(v.chained(metric) for v in rows):
        label += " · some chained over several paired runs (see tooltips)"
    return label


def interval_arrays(rows: Sequence[VersionRow], metric: str, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each value down to its interval's lower bound and up to its upper bound
    (0 where no interval is stored): what an error bar draws."""
    lo = np.zeros(len(rows))
    hi = np.zeros(len(rows))
    for i, v in enumerate(rows):
        iv = v.interval(metric)
        if iv is not None:
            lo[i] = max(0.0, values[i] - iv[0])
            hi[i] = max(0.0, iv[1] - values[i])
    return lo, hi


class UniformScatter(pg.ScatterPlotItem):
    """A scatter item whose points share one symbol, size, pen and brush.

    Why: pyqtgraph looks every new point's symbol up in its atlas one by one in Python
    (~10 µs a point, most of a 10,000-point redraw). When all the points being added share a
    style, one lookup serves them all. Points with their own style (e.g. the hovered one)
    take pyqtgraph's normal path."""

    def updateSpots(self, dataSet: Any = None) -> None:
        data = self.data if dataSet is None else dataSet
        if not (self.opts["pxMode"] and self.opts["useCache"]) or len(data) == 0:
            return super().updateSpots(dataSet)
        mask = data["sourceRect"]["w"] == 0
        if not np.any(mask):
            return super().updateSpots(dataSet)
        sub = data[mask]
        uniform = (np.all(sub["size"] == sub["size"][0])
                   and all(len({id(o) for o in sub[col]}) == 1 for col in ("symbol", "pen", "brush")))
        if not uniform:
            return super().updateSpots(dataSet)
        first = np.zeros(len(data), dtype=bool)
        first[np.flatnonzero(mask)[0]] = True
        style = [col[0] for col in self._style(["symbol", "size", "pen", "brush"], data=data, idx=first)]
        coords = self.fragmentAtlas[[tuple(style)]][0]
        data["sourceRect"][mask] = coords
        self._maybeRebuildAtlas()
        self._updateMaxSpotSizes(data=data)
        self.invalidate()


class ScatterPanel(QWidget):
    """One scatter plot of metric Y against metric X, one point per version."""

    clicked = Signal(int, bool)  # version id, add to selection (Ctrl held)

    def __init__(self, title: str, x_metric: str, y_metric: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.x_combo = QComboBox()
        self.y_combo = QComboBox()
        self.x_combo.setObjectName(f"{title}-x")
        self.y_combo.setObjectName(f"{title}-y")
        for combo in (self.x_combo, self.y_combo):  # long metric names must not widen the view
            narrow(combo)
        self._wanted = (x_metric, y_metric)
        self.plot = pg.PlotWidget()
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        self.plot.setTitle(title)
        self.legend = self.plot.addLegend(offset=(-10, -10))  # bottom right: good models sit top left
        for axis in ("left", "bottom"):
            self.plot.getAxis(axis).enableAutoSIPrefix(False)  # "0.78", not "780 (x0.001)"
        # the stored 95 % intervals (Wilson for accuracy, bootstrap for paired ratios…), under the points
        self.errors = pg.ErrorBarItem(x=np.zeros(0), y=np.zeros(0), beam=0.0, pen=pg.mkPen("#8a94a6", width=1.2))
        self.plot.addItem(self.errors)
        self.error_bounds: dict[int, tuple[float | None, float | None, float | None, float | None]] = {}
        self.phase_items: dict[str, pg.ScatterPlotItem] = {}
        for phase in PHASE_ORDER:
            item = UniformScatter(size=9, pen=pg.mkPen(None), brush=pg.mkBrush(PHASE_COLORS[phase]),
                                      hoverable=True, hoverSize=13, tip=self._tip, name=phase)
            item.sigClicked.connect(self._on_click)
            self.plot.addItem(item)
            self.phase_items[phase] = item
        self.front = pg.PlotDataItem(pen=pg.mkPen("#e07b39", width=2, style=Qt.PenStyle.DashLine), name="Pareto front",
                                     symbol="o", symbolSize=15, symbolPen=pg.mkPen("#e07b39", width=1.5),
                                     symbolBrush=None)
        self.plot.addItem(self.front)
        self.prod_item = pg.ScatterPlotItem(size=22, symbol="star", pen=pg.mkPen("#1d6b3a", width=1.5),
                                            brush=pg.mkBrush("#ffd23f"), name="production")
        self.plot.addItem(self.prod_item)
        # the front's rings and the production star sit over the points: a click on them
        # selects the version under them as a click on the point does
        self.front.sigPointsClicked.connect(self._on_click)
        self.prod_item.sigClicked.connect(self._on_click)
        self.user_y = False  # the user picked the Y axis (else it follows the task's quality metric)
        self.sel_item = pg.ScatterPlotItem(size=18, symbol="o", pen=pg.mkPen("#d62f6f", width=2.5),
                                           brush=pg.mkBrush(None))
        self.plot.addItem(self.sel_item)
        self._rows: list[VersionRow] = []
        self._by_id: dict[int, VersionRow] = {}
        self.points_shown = 0
        self.front_ids: list[int] = []

        axes = QHBoxLayout()
        axes.addWidget(QLabel("Y"))
        axes.addWidget(self.y_combo, 1)
        axes.addWidget(QLabel("X"))
        axes.addWidget(self.x_combo, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(axes)
        layout.addWidget(self.plot, 1)
        self.x_combo.currentTextChanged.connect(lambda _: self.redraw())
        self.y_combo.currentTextChanged.connect(lambda _: self.redraw())
        # a choice made in the combo becomes the panel's wanted axis
        self.x_combo.activated.connect(lambda _: self._remember())
        self.y_combo.activated.connect(lambda _: self._remember())
        self._selected: set[int] = set()

    # -- data -------------------------------------------------------------------------------
    def set_metrics(self, names: Sequence[str], quality_metric: str | None = None) -> None:
        names = list(names)
        quality = [n for n in names if not lower_is_better(n) and not is_performance(n)] or \
            [n for n in names if not lower_is_better(n)]
        costs = [n for n in names if lower_is_better(n)]
        x_fallback = None
        if "latency" in self._wanted[0]:  # vs production (derived), else vs parent, else any latency
            x_fallback = next((n for n in LATENCY_AXES if n in names), None) or \
                next((n for n in costs if "latency" in n), None)
        y_fallback = quality_metric if quality_metric in names else (quality[0] if quality else "")
        fallbacks = (x_fallback or (costs[0] if costs else ""), y_fallback)
        for combo, wanted, fallback in ((self.x_combo, self._wanted[0], fallbacks[0]),
                                        (self.y_combo, self._wanted[1], fallbacks[1])):
            # the user's pick (or set_axes) wins, then the panel's default, then a fallback;
            # a fallback chosen while the catalog was still empty must not stick
            combo.blockSignals(True)
            fill_metric_combo(combo, names)
            idx = combo.findText(wanted)
            if idx < 0:
                idx = combo.findText(fallback)
            combo.setCurrentIndex(max(idx, 0))
            combo.blockSignals(False)

    def _remember(self) -> None:
        self._wanted = (self.x_combo.currentText(), self.y_combo.currentText())
        self.user_y = True

    def follow_quality(self, metric: str | None) -> None:
        """Point the Y axis at the task's quality metric, unless the user picked one."""
        if self.user_y or not metric or self.y_combo.findText(metric) < 0:
            return
        self._wanted = (self._wanted[0], metric)
        self.y_combo.setCurrentIndex(self.y_combo.findText(metric))

    def follow_cost(self, metrics: Sequence[str]) -> None:
        """Point the X axis at the first of `metrics` that is stored, unless the user picked one."""
        if self.user_y:
            return
        for metric in metrics:
            idx = self.x_combo.findText(metric)
            if idx >= 0:
                self._wanted = (metric, self._wanted[1])
                self.x_combo.setCurrentIndex(idx)
                return

    def set_axes(self, x: str, y: str) -> None:
        self._wanted = (x, y)
        self.user_y = True
        for combo, name in ((self.x_combo, x), (self.y_combo, y)):
            idx = combo.findText(name)
            if idx >= 0:
                combo.setCurrentIndex(idx)

    def set_rows(self, rows: list[VersionRow], selected: set[int]) -> None:
        self._rows = rows
        self._by_id = {v.id: v for v in rows}
        self._selected = selected
        self.redraw()

    def set_selected(self, selected: set[int]) -> None:
        self._selected = selected
        self._draw_selection()

    def redraw(self) -> None:
        xm, ym = self.x_combo.currentText(), self.y_combo.currentText()
        rows = self._rows
        # an axis is labelled with the key its combo shows (what policies and the CLI use); a
        # derived axis, which no command names, with its readable title and how it was made
        self.x_title, self.y_title = axis_label(xm, rows), axis_label(ym, rows)
        self.plot.setLabel("bottom", self.x_title if xm in DERIVED_AXES else xm)
        self.plot.setLabel("left", self.y_title if ym in DERIVED_AXES else ym)
        self.plot.getAxis("bottom").setToolTip(self.x_title)
        self.plot.getAxis("left").setToolTip(self.y_title)
        xs_all = [v.value(xm) for v in rows]
        ys_all = [v.value(ym) for v in rows]
        keep = [i for i in range(len(rows)) if xs_all[i] is not None and ys_all[i] is not None]
        xa = np.fromiter((xs_all[i] for i in keep), dtype=float, count=len(keep))
        ya = np.fromiter((ys_all[i] for i in keep), dtype=float, count=len(keep))
        ida = np.fromiter((rows[i].id for i in keep), dtype=np.int64, count=len(keep))
        pa = np.array([rows[i].phase for i in keep], dtype=object)
        self.points_shown = len(keep)
        for phase, item in self.phase_items.items():
            mask = pa == phase
            item.setData(x=xa[mask], y=ya[mask], data=ida[mask])
        if len(keep) >= 2:
            front = pareto_indices(xa, ya, lower_is_better(xm), lower_is_better(ym))
            self.front_ids = ida[front].tolist()
            self.front.setData(xa[front], ya[front], data=ida[front])
        else:
            self.front_ids = []
            self.front.setData([], [])
        self._draw_errors([rows[i] for i in keep], xm, ym, xa, ya, ida)
        self._fit_range(xa, ya)
        phases = pa
        prod = phases == "production"
        self.prod_item.setData(x=xa[prod], y=ya[prod], data=ida[prod])
        self._update_legend({str(p) for p in set(phases.tolist())})
        self._draw_selection()

    def _draw_errors(self, shown: list[VersionRow], xm: str, ym: str, xa: np.ndarray, ya: np.ndarray,
                     ida: np.ndarray) -> None:
        """Error bars from the stored intervals of both axes (none where nothing is stored)."""
        left, right = interval_arrays(shown, xm, xa)
        bottom, top = interval_arrays(shown, ym, ya)
        self.error_bounds = {}
        for i, v in enumerate(shown):
            xi, yi = v.interval(xm), v.interval(ym)
            if xi is not None or yi is not None:
                self.error_bounds[int(ida[i])] = (xi[0] if xi else None, xi[1] if xi else None,
                                                  yi[0] if yi else None, yi[1] if yi else None)
        has = (left + right + top + bottom) > 0
        self.errors.setData(x=xa[has], y=ya[has], left=left[has], right=right[has], top=top[has],
                            bottom=bottom[has])
        self.errors.setVisible(bool(np.any(has)))

    def _fit_range(self, xa: np.ndarray, ya: np.ndarray) -> None:
        """Auto range, except along an axis where every point has the same value (one point,
        or equal sizes): pyqtgraph would span -20..20 or a hair's width; show ±10 % instead."""
        vb = self.plot.getPlotItem().getViewBox()
        vb.enableAutoRange()
        if len(xa) == 0:
            return
        for values, set_range in ((xa, vb.setXRange), (ya, vb.setYRange)):
            lo, hi = float(values.min()), float(values.max())
            if hi - lo <= 1e-12 * max(1.0, abs(hi)):
                pad = abs(hi) * 0.1 or 1.0
                set_range(lo - pad, hi + pad, padding=0)

    def _update_legend(self, present: set[str]) -> None:
        """List only the phases that have points, then the front and the production mark."""
        key = tuple(p for p in PHASE_ORDER if p in present)
        if key == getattr(self, "_legend_key", None):
            return
        self._legend_key = key
        self.legend.clear()
        for phase in key:
            if phase == "production":  # the star below stands for it: "production" once in the legend
                continue
            self.legend.addItem(self.phase_items[phase], phase)
        if self.front_ids:
            self.legend.addItem(self.front, "Pareto front")
        if "production" in present:
            self.legend.addItem(self.prod_item, "production")

    def _draw_selection(self) -> None:
        xm, ym = self.x_combo.currentText(), self.y_combo.currentText()
        pts = [(v.value(xm), v.value(ym)) for i in self._selected if (v := self._by_id.get(i)) is not None]
        pts = [(x, y) for x, y in pts if x is not None and y is not None]
        self.sel_item.setData(x=[p[0] for p in pts], y=[p[1] for p in pts])

    # -- interaction ------------------------------------------------------------------------
    def _tip(self, x: float, y: float, data: Any) -> str:
        v = self._by_id.get(int(data)) if data is not None else None
        if v is None:
            return f"{x:.4g}, {y:.4g}"
        lines = [f"{v.ref}  [{v.phase}]"]
        for metric, value in ((self.x_combo.currentText(), x), (self.y_combo.currentText(), y)):
            iv = v.interval(metric)
            text = f"{metric_title(metric)}: {fmt_metric(value)}"
            if iv is not None:
                text += f"  (95 % interval {fmt_metric(iv[0])} – {fmt_metric(iv[1])})"
            lines.append(text)
            if metric in v.derivations:
                lines.append(f"    {v.how(metric)}")
            if metric == "deployable_size_mb" and v.ships_with:
                lines.append(f"    own {fmt_metric(v.size_mb)} MB + what it runs with: {', '.join(v.ships_with)}")
        if v.recipe_name:
            lines.append(f"recipe: {v.recipe_name}")
        return "\n".join(lines)

    def _on_click(self, item: pg.ScatterPlotItem, points: Sequence[Any], ev: Any) -> None:
        if len(points) == 0:
            return
        add = bool(ev is not None and ev.modifiers() & Qt.KeyboardModifier.ControlModifier)
        self.clicked.emit(int(points[0].data()), add)

    def click_version(self, version_id: int, add: bool = False) -> None:
        """What a click on the point does (for keyboard users and tests)."""
        self.clicked.emit(version_id, add)


class CompareView(QWidget):
    name = "compare"
    title = "Compare"
    selection_requested = Signal(list)  # version ids

    def __init__(self, window: Any = None) -> None:
        super().__init__()
        self.model_combo = QComboBox()
        self.model_combo.setObjectName("compare-model")
        # deployable size: an adapter is plotted with its base (it cannot ship without it)
        self.size_panel = ScatterPanel("Quality vs size", "deployable_size_mb", "accuracy")
        # latency as the ratio to the model's production version, from the paired ratios (same
        # job, interleaved rounds): comparable across versions, unlike each one's ratio to its
        # own parent or absolute times taken at different moments (relman.ui.paired_latency)
        self.latency_panel = ScatterPanel("Quality vs latency", RATIO_KEY, "accuracy")
        self.trend_metric = QComboBox()
        self.trend_plot = pg.PlotWidget(title="Metric over versions")
        self.trend_plot.showGrid(x=True, y=True, alpha=0.25)
        self.trend_plot.getAxis("left").enableAutoSIPrefix(False)
        self.trend_line = pg.PlotDataItem(pen=pg.mkPen("#3b6fd8", width=2), symbol="o", symbolSize=7,
                                          symbolBrush="#3b6fd8")
        self.trend_plot.addItem(self.trend_line)
        self.table = QTableWidget()
        self.table.setObjectName("compare-table")
        self.snapshot: Snapshot | None = None
        self.selected: list[int] = []
        # "Compare selected" (any view's action): only these versions are plotted until "Show all"
        self.pinned: list[int] | None = None
        self.pinned_label = QLabel("")
        self.pinned_label.setObjectName("compare-pinned")
        self.show_all_button = QPushButton("Show all versions")
        self.show_all_button.setObjectName("compare-show-all")
        self.show_all_button.clicked.connect(self.show_all)
        pinned_row = QHBoxLayout()
        pinned_row.addWidget(self.pinned_label, 1)
        pinned_row.addWidget(self.show_all_button)
        self.pinned_bar = QWidget()
        self.pinned_bar.setLayout(pinned_row)
        self.pinned_bar.setVisible(False)

        top = QHBoxLayout()
        top.addWidget(QLabel("Model"))
        top.addWidget(self.model_combo)
        hint = QLabel("Hover a point for details; click selects it, Ctrl+click adds it to the comparison.")
        hint.setObjectName("hint")
        hint.setWordWrap(True)
        narrow(self.model_combo)
        narrow(self.trend_metric)
        top.addWidget(hint, 1)
        plots = QSplitter(Qt.Orientation.Horizontal)
        plots.addWidget(self.size_panel)
        plots.addWidget(self.latency_panel)
        trend = QWidget()
        tl = QVBoxLayout(trend)
        tl.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel("Metric"))
        row.addWidget(self.trend_metric, 1)
        tl.addLayout(row)
        tl.addWidget(self.trend_plot, 1)
        bottom = QSplitter(Qt.Orientation.Horizontal)
        bottom.addWidget(trend)
        bottom.addWidget(self.table)
        bottom.setSizes([500, 500])  # the comparison table gets half, not what the trend leaves
        vs = QSplitter(Qt.Orientation.Vertical)
        vs.addWidget(plots)
        vs.addWidget(bottom)
        vs.setStretchFactor(0, 3)
        vs.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.pinned_bar)
        layout.addWidget(vs, 1)

        self.model_combo.currentTextChanged.connect(lambda _: self._refresh_rows())
        self.model_combo.activated.connect(lambda _: self.show_all())  # the user picked a model: all of it
        self.trend_metric.currentTextChanged.connect(lambda _: self._draw_trend())
        self._trend_choice = ""
        self.trend_metric.activated.connect(lambda _: setattr(self, "_trend_choice", self.trend_metric.currentText()))
        for panel in (self.size_panel, self.latency_panel):
            panel.clicked.connect(self._on_point_clicked)
        if window is not None:
            self.selection_requested.connect(lambda ids: window.set_selection(ids, source=self.name))

    # -- the view protocol --------------------------------------------------------------------
    def refresh(self, state: Any) -> None:
        self.set_snapshot(state.snapshot, state.model)
        self.set_selection(state.selected)

    def on_selection(self, state: Any) -> None:
        if state.model:
            self.set_model(state.model)
        self.set_selection(state.selected)

    def apply_theme(self, dark: bool) -> None:
        self.set_theme(dark)

    # -- updates ----------------------------------------------------------------------------
    def set_snapshot(self, snap: Snapshot, model: str | None = None) -> None:
        self.snapshot = snap
        names = snap.plottable_metrics()
        if is_causal_model(snap, model or self.model_combo.currentText()):
            names = lm_first(names)
        quality = task_quality_metric(snap, model or self.model_combo.currentText())
        for panel in (self.size_panel, self.latency_panel):
            panel.set_metrics(names, quality)
        current = self._trend_choice or (snap.metric_names[0] if snap.metric_names else "size_mb")
        self.trend_metric.blockSignals(True)
        self.trend_metric.clear()
        self.trend_metric.addItems(names)
        self.trend_metric.setCurrentIndex(max(0, self.trend_metric.findText(current)))
        self.trend_metric.blockSignals(False)
        wanted = model or self.model_combo.currentText()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.model_combo.addItems([ALL_MODELS] + snap.models())
        idx = self.model_combo.findText(wanted) if wanted else -1
        self.model_combo.setCurrentIndex(idx if idx >= 0 else (1 if snap.models() else 0))
        self.model_combo.blockSignals(False)
        self._refresh_rows()

    def set_model(self, model: str | None) -> None:
        idx = self.model_combo.findText(model or ALL_MODELS)
        if idx >= 0:
            self.model_combo.setCurrentIndex(idx)

    def compare_only(self, ids: Sequence[int]) -> None:
        """Plot and tabulate exactly `ids` (the "Compare selected" action), in that order."""
        self.pinned = [int(i) for i in ids]
        if self.snapshot is not None:
            by_id = self.snapshot.by_id()
            models = {by_id[i].model for i in self.pinned if i in by_id}
            self.model_combo.blockSignals(True)
            idx = self.model_combo.findText(next(iter(models)) if len(models) == 1 else ALL_MODELS)
            self.model_combo.setCurrentIndex(max(idx, 0))
            self.model_combo.blockSignals(False)
        self.pinned_bar.setVisible(True)
        self.selected = list(self.pinned)
        self._refresh_rows()

    def show_all(self) -> None:
        """Leave "Compare selected": every version of the model in the combo again."""
        if self.pinned is None:
            return
        self.pinned = None
        self.pinned_bar.setVisible(False)
        self._refresh_rows()

    def current_rows(self) -> list[VersionRow]:
        if self.snapshot is None:
            return []
        if self.pinned is not None:
            by_id = self.snapshot.by_id()
            rows = [by_id[i] for i in self.pinned if i in by_id]
            self.pinned_label.setText(f"Comparing the {len(rows)} selected versions: "
                                      + ", ".join(v.ref for v in rows))
            return rows
        model = self.model_combo.currentText()
        return self.snapshot.of_model(None if model in ("", ALL_MODELS) else model)

    def _refresh_rows(self) -> None:
        rows = self.current_rows()
        sel = set(self.selected)
        quality = task_quality_metric(self.snapshot, self.model_combo.currentText()) if self.snapshot else None
        for panel in (self.size_panel, self.latency_panel):
            panel.follow_quality(quality)
        if self.snapshot is not None and is_causal_model(self.snapshot, self.model_combo.currentText()):
            self.latency_panel.follow_cost(LM_COST_AXES)
        for panel in (self.size_panel, self.latency_panel):
            panel.set_rows(rows, sel)
        self._draw_trend()
        self._fill_table()

    def set_selection(self, ids: list[int]) -> None:
        self.selected = list(ids)
        for panel in (self.size_panel, self.latency_panel):
            panel.set_selected(set(ids))
        self._fill_table()

    def _on_point_clicked(self, version_id: int, add: bool) -> None:
        ids = list(self.selected) if add else []
        if version_id in ids:
            ids.remove(version_id)
        else:
            ids.append(version_id)
        self.selection_requested.emit(ids)

    def _draw_trend(self) -> None:
        metric = self.trend_metric.currentText()
        model = self.model_combo.currentText()
        rows = self.current_rows() if model not in ("", ALL_MODELS) else []
        xs, ys, ticks = [], [], []
        for i, v in enumerate(rows):
            y = v.value(metric)
            if y is None:
                continue
            xs.append(i)
            ys.append(y)
            ticks.append((i, v.version))
        step = max(1, len(ticks) // 12)
        self.trend_plot.getAxis("bottom").setTicks([ticks[::step]])
        self.trend_plot.setLabel("left", metric)
        self.trend_plot.setTitle(f"{metric} over versions of {model}" if rows else "Metric over versions (pick a model)")
        self.trend_line.setData(xs, ys)

    def _fill_table(self) -> None:
        snap = self.snapshot
        by_id = snap.by_id() if snap else {}
        rows = [by_id[i] for i in self.selected if i in by_id]
        metrics: list[str] = ["size_mb", "params"]
        for v in rows:
            metrics += [m for m in v.metrics if m not in metrics]
        quality = task_quality_metric(snap, rows[0].model) if snap and rows else None
        metrics.sort(key=lambda m: table_rank(m, quality))  # stable: quality first, then size, then the rest
        labels = ["phase", "recipe"] + metrics
        self.table.clear()
        self.table.setRowCount(len(labels))
        self.table.setColumnCount(len(rows))
        self.table.setVerticalHeaderLabels(labels)
        self.table.setHorizontalHeaderLabels([v.ref + (" (base)" if i == 0 else "") for i, v in enumerate(rows)])
        if not rows:
            return
        base = rows[0]
        for c, v in enumerate(rows):
            self.table.setItem(0, c, QTableWidgetItem(v.phase))
            self.table.setItem(1, c, QTableWidgetItem(v.recipe_name or "(import)"))
            for r, m in enumerate(metrics, start=2):
                value, ref = v.value(m), base.value(m)
                text = fmt_table_value(value)
                item = QTableWidgetItem(text)
                if c > 0 and value is not None and ref is not None:
                    delta = value - ref
                    item.setText(f"{text}  ({'+' if delta >= 0 else ''}{fmt_table_value(delta)})")
                    better = delta < 0 if lower_is_better(m) else delta > 0
                    if abs(delta) > 1e-12:
                        item.setForeground(QBrush(QColor("#2e9d57" if better else "#c4453b")))
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()

    def set_theme(self, dark: bool) -> None:
        bg, fg = ("#252932", "#dfe3ea") if dark else ("#ffffff", "#1d2330")
        for w in (self.size_panel.plot, self.latency_panel.plot, self.trend_plot):
            w.setBackground(bg)
            for axis in ("left", "bottom"):
                w.getAxis(axis).setTextPen(fg)
                w.getAxis(axis).setPen(fg)
