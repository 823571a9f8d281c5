"""Lineage: versions as nodes, parent → child edges labelled with the recipe; merges show
as a node with several incoming edges.

Layered layout (column = longest path from a root, rows in id order) is enough for release
families and needs no graph-layout dependency. Shown per model family: the model's versions
plus every ancestor and descendant in other models, capped so a huge catalog stays quick.
"""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QPainter, QPainterPath, QPen, QPolygonF
from PySide6.QtWidgets import (QComboBox, QGraphicsItem, QGraphicsPathItem, QGraphicsPolygonItem,
                               QGraphicsRectItem, QGraphicsScene, QGraphicsSimpleTextItem, QGraphicsView,
                               QHBoxLayout, QLabel, QVBoxLayout, QWidget)

from relman.ui.qt_models import PHASE_COLORS
from relman.ui.snapshot import Snapshot, VersionRow

NODE_W, NODE_H, COL_GAP, ROW_GAP = 170, 46, 150, 24
MAX_NODES = 400
ALL_MODELS = "All models"


def family(snap: Snapshot, model: str | None) -> list[int]:
    """Ids of `model`'s versions plus all their ancestors and descendants (all if None)."""
    if model is None:
        return [v.id for v in snap.versions]
    seeds = {v.id for v in snap.versions if v.model == model}
    parents: dict[int, list[int]] = {}
    children: dict[int, list[int]] = {}
    for e in snap.edges:
        parents.setdefault(e.child_id, []).append(e.parent_id)
        children.setdefault(e.parent_id, []).append(e.child_id)
    out = set(seeds)
    for links in (parents, children):
        stack = list(seeds)
        while stack:
            n = stack.pop()
            for m in links.get(n, []):
                if m not in out:
                    out.add(m)
                    stack.append(m)
    return sorted(out)


def layered_layout(ids: list[int], edges: list[tuple[int, int]]) -> dict[int, tuple[int, int]]:
    """id → (column, row): column = longest path from a root."""
    idset = set(ids)
    parents: dict[int, list[int]] = {}
    for p, c in edges:
        if p in idset and c in idset:
            parents.setdefault(c, []).append(p)
    depth: dict[int, int] = {}

    def d(n: int, seen: frozenset[int] = frozenset()) -> int:
        if n in depth:
            return depth[n]
        ps = [p for p in parents.get(n, []) if p not in seen]
        depth[n] = 0 if not ps else 1 + max(d(p, seen | {n}) for p in ps)
        return depth[n]

    rows: dict[int, int] = {}
    pos: dict[int, tuple[int, int]] = {}
    for n in sorted(ids):
        col = d(n)
        pos[n] = (col, rows.get(col, 0))
        rows[col] = rows.get(col, 0) + 1
    return pos


class NodeItem(QGraphicsRectItem):
    def __init__(self, v: VersionRow, dark: bool) -> None:
        super().__init__(0, 0, NODE_W, NODE_H)
        self.version_id = v.id
        color = QColor(PHASE_COLORS.get(v.phase, "#888888"))
        self.setBrush(QBrush(QColor("#2b303a") if dark else QColor("#ffffff")))
        self.setPen(QPen(color, 2.5 if v.phase == "production" else 1.5))
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable, True)
        self.setToolTip(f"{v.ref}\nphase: {v.phase}\nrecipe: {v.recipe_name or '(import)'}")
        title = QGraphicsSimpleTextItem(f"{v.model}@{v.version}", self)
        f = QFont()
        f.setBold(True)
        title.setFont(f)
        title.setBrush(QBrush(QColor("#dfe3ea") if dark else QColor("#1d2330")))
        title.setPos(8, 5)
        sub = QGraphicsSimpleTextItem(v.phase + (f" · {v.canary_share:g}%" if v.canary_share else ""), self)
        sub.setBrush(QBrush(color))
        sub.setPos(8, 24)


class LineageView(QWidget):
    name = "lineage"
    title = "Lineage"
    node_clicked = Signal(int)

    def __init__(self, window: Any = None) -> None:
        super().__init__()
        self.model_combo = QComboBox()
        self.model_combo.setObjectName("lineage-model")
        self.scene = QGraphicsScene(self)
        self.view = QGraphicsView(self.scene)
        self.view.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.view.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.info = QLabel("")
        self.info.setObjectName("hint")
        self.snapshot: Snapshot | None = None
        self.dark = False
        self.nodes: dict[int, NodeItem] = {}
        self.edge_labels: list[str] = []
        self.edges_drawn: list[tuple[int, int]] = []
        self.adapter_edges: list[tuple[int, int]] = []  # drawn dashed: a LoRA adapter and the base it is pinned to
        top = QHBoxLayout()
        top.addWidget(QLabel("Model"))
        top.addWidget(self.model_combo)
        top.addWidget(self.info, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.view, 1)
        self.model_combo.currentTextChanged.connect(lambda _: self.redraw())
        self.scene.selectionChanged.connect(self._on_selection)
        if window is not None:
            self.node_clicked.connect(lambda vid: window.set_selection([vid], source=self.name))

    # -- the view protocol --------------------------------------------------------------------
    def refresh(self, state: Any) -> None:
        self.set_snapshot(state.snapshot, state.model)

    def on_selection(self, state: Any) -> None:
        if state.model:
            self.set_model(state.model)

    def apply_theme(self, dark: bool) -> None:
        self.set_theme(dark)

    def set_snapshot(self, snap: Snapshot, model: str | None = None) -> None:
        self.snapshot = snap
        wanted = model or self.model_combo.currentText()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.model_combo.addItems([ALL_MODELS] + snap.models())
        idx = self.model_combo.findText(wanted) if wanted else -1
        self.model_combo.setCurrentIndex(idx if idx >= 0 else (1 if snap.models() else 0))
        self.model_combo.blockSignals(False)
        self.redraw()

    def set_model(self, model: str) -> None:
        idx = self.model_combo.findText(model)
        if idx >= 0:
            self.model_combo.setCurrentIndex(idx)

    def redraw(self) -> None:
        self.scene.clear()
        self.nodes = {}
        self.edge_labels = []
        self.edges_drawn = []
        snap = self.snapshot
        if snap is None:
            return
        model = self.model_combo.currentText()
        ids = family(snap, None if model in ("", ALL_MODELS) else model)
        total = len(ids)
        ids = ids[-MAX_NODES:]
        self.info.setText(f"{len(ids)} versions" + (f" (newest {MAX_NODES} of {total})" if total > len(ids) else "")
                          + " · arrows point from parent to child; labels name the recipe"
                          + "; dashed: a LoRA adapter and its base")
        by_id = snap.by_id()
        edges = [(e.parent_id, e.child_id, e.relation) for e in snap.edges]
        pos = layered_layout(ids, [(p, c) for p, c, _ in edges])
        for vid, (col, row) in pos.items():
            node = NodeItem(by_id[vid], self.dark)
            node.setPos(col * (NODE_W + COL_GAP), row * (NODE_H + ROW_GAP))
            self.scene.addItem(node)
            self.nodes[vid] = node
        pen = QPen(QColor("#9aa3b2" if self.dark else "#6b7385"), 1.6)
        text_brush = QBrush(QColor("#e0a96d" if self.dark else "#a0521d"))
        adapter_pen = QPen(QColor("#5fb3a1" if self.dark else "#1f7a68"), 1.8, Qt.PenStyle.DashLine)
        self.adapter_edges = []
        for p, c, relation in edges:
            if p not in self.nodes or c not in self.nodes:
                continue
            child = by_id[c]
            label = child.recipe_name or relation or ""
            if child.format == "peft-adapter" and child.adapter_base == by_id[p].ref:  # adapter → its base
                self.adapter_edges.append((p, c))
                self._edge(self.nodes[p], self.nodes[c], f"LoRA adapter ({label})", adapter_pen, text_brush)
                self.edges_drawn.append((p, c))
                self.edge_labels.append(f"LoRA adapter ({label})")
                continue
            self._edge(self.nodes[p], self.nodes[c], label, pen, text_brush)
            self.edges_drawn.append((p, c))
            self.edge_labels.append(label)
        self.scene.setSceneRect(self.scene.itemsBoundingRect().adjusted(-20, -20, 20, 20))

    def _edge(self, a: NodeItem, b: NodeItem, label: str, pen: QPen, text_brush: QBrush) -> None:
        start = a.pos() + QPointF(NODE_W, NODE_H / 2)
        end = b.pos() + QPointF(0, NODE_H / 2)
        path = QPainterPath(start)
        dx = max(30.0, (end.x() - start.x()) / 2)
        path.cubicTo(start + QPointF(dx, 0), end - QPointF(dx, 0), end)
        item = QGraphicsPathItem(path)
        item.setPen(pen)
        item.setZValue(-1)
        self.scene.addItem(item)
        angle = math.atan2(0, 1)
        tip = end
        size = 8
        arrow = QPolygonF([tip, tip - QPointF(size * math.cos(angle - 0.4), size * math.sin(angle - 0.4)),
                           tip - QPointF(size * math.cos(angle + 0.4), size * math.sin(angle + 0.4))])
        head = QGraphicsPolygonItem(arrow)
        head.setBrush(QBrush(pen.color()))
        head.setPen(pen)
        self.scene.addItem(head)
        if label:
            text = QGraphicsSimpleTextItem(label)
            text.setBrush(text_brush)
            # near the child end, where fanned-out edges are apart, so labels do not collide
            at = path.pointAtPercent(0.62)
            br: QRectF = text.boundingRect()
            text.setPos(at.x() - br.width() / 2, at.y() - br.height() - 1)
            self.scene.addItem(text)

    def _on_selection(self) -> None:
        for item in self.scene.selectedItems():
            if isinstance(item, NodeItem):
                self.node_clicked.emit(item.version_id)
                return

    def set_theme(self, dark: bool) -> None:
        self.dark = dark
        self.view.setBackgroundBrush(QBrush(QColor("#252932" if dark else "#ffffff")))
        self.redraw()
