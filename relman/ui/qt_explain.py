"""Explain view: why a version decides, next to the version it is compared with (its parent by
default) — word heatmaps for text (WordPiece pieces merged, their attributions summed),
saliency overlays for images, each side's prediction and confidence, a flip list of examples whose prediction changed, most divergent first, and a
legend saying what red and blue mean.

The view only reads stored attributions (`relman.app.explain.load_explain_view`, on a worker
thread with its own catalog connection, so hash-checking blobs never blocks the GUI; a newer
request makes an older answer stale); "Compute
attributions" asks the work controller to queue explain jobs (`WorkActions.queue_explain`). It
never imports torch or Captum and never computes an attribution on the GUI thread; queued
jobs are followed through the window's job hook (and a light poll of their rows).
"""

from __future__ import annotations

import html
import threading
from typing import Any, Callable

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPixmap
from PySide6.QtWidgets import (QComboBox, QGridLayout, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                               QProgressBar, QPushButton, QSpinBox, QSplitter, QVBoxLayout, QWidget)

POS, NEG = (214, 39, 40), (31, 119, 180)  # supports the prediction / speaks against it
OVERLAY_PX = 192


def heat_color(score: float, scale: float) -> str:
    """A CSS background for a token: red supports the prediction, blue opposes it, blended
    with white by |score| / scale (opaque: Qt's rich text does not honour rgba alpha)."""
    a = 0.0 if scale <= 0 else min(1.0, abs(score) / scale)
    r, g, b = POS if score >= 0 else NEG
    mix = [round(255 - a * (255 - c)) for c in (r, g, b)]
    return "#{:02x}{:02x}{:02x}".format(*mix)


LEGEND_HTML = (f'<span style="background:{heat_color(1, 1)}; color:white">&nbsp;red&nbsp;</span> supports the '
               f'prediction · <span style="background:{heat_color(-1, 1)}; color:white">&nbsp;blue&nbsp;</span> '
               "speaks against it · paler = weaker (one scale for both sides; hover a word for its score)")


def merge_word_pieces(features: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Text features as words: WordPiece continuations (`##or`) join the piece before them and
    their attributions add up (attributions are additive over features, so a word's share is the
    sum of its pieces'). Each word keeps its `pieces` [(name, score)] for the tooltip. Image
    patches and tokens without `##` pass through unchanged."""
    words: list[dict[str, Any]] = []
    for f in features:
        name, score = str(f["name"]), float(f["score"])
        if name.startswith("##") and len(name) > 2 and words:
            w = words[-1]
            w["name"] += name[2:]
            w["score"] += score
            w["pieces"].append((name, score))
        else:
            words.append({"name": name, "score": score, "pieces": [(name, score)]})
    return words


def display_features(example: dict[str, Any]) -> list[dict[str, Any]]:
    """What one example shows: words for text (merged pieces), the patches for images."""
    return example["features"] if example.get("grid") else merge_word_pieces(example["features"])


def shared_scale(*examples: dict[str, Any] | None) -> float:
    """One colour scale for the examples shown side by side: the largest |attribution| among
    them (of the words shown, for text), but at least 5 % of the explained score's size, so
    attributions that are all ~0 (the model ignores every feature) stay pale instead of being
    stretched to full colour."""
    shown = [e for e in examples if e]
    top = max((abs(f["score"]) for e in shown for f in display_features(e)), default=0.0)
    floor = 0.05 * max((abs(e.get("score") or 0.0) for e in shown), default=0.0)
    return max(top, floor)


def token_html(example: dict[str, Any], scale: float | None = None) -> str:
    """The example's words, each on its attribution's colour; the tooltip gives the word's
    score and, for a word of several pieces, each piece's."""
    words = merge_word_pieces(example["features"])
    if scale is None:
        scale = max((abs(w["score"]) for w in words), default=0.0)

    def title(w: dict[str, Any]) -> str:
        pieces = w["pieces"]
        detail = "" if len(pieces) == 1 else " = " + " ".join(f"{n} {s:+.4f}" for n, s in pieces)
        return html.escape(f"{w['score']:+.4f}{detail}", quote=True)

    spans = [f'<span style="background:{heat_color(w["score"], scale)}" title="{title(w)}">'
             f'{html.escape(w["name"])}</span>' for w in words]
    return " ".join(spans)


def overlay_pixmap(example: dict[str, Any], size: int = OVERLAY_PX, scale: float | None = None) -> QPixmap:
    """The example's stored thumbnail in grey with each patch tinted by its attribution."""
    img = example.get("image") or [[[0]]]
    h, w = len(img), len(img[0])
    grey = QImage(w, h, QImage.Format.Format_RGB32)
    for y in range(h):
        for x in range(w):
            px = img[y][x]
            v = int(sum(px) / len(px)) if isinstance(px, list) else int(px)
            grey.setPixelColor(x, y, QColor(v, v, v))
    pm = QPixmap.fromImage(grey.scaled(size, size, Qt.AspectRatioMode.IgnoreAspectRatio,
                                       Qt.TransformationMode.FastTransformation))
    rows, cols = example.get("grid") or [1, len(example["features"])]
    feats = example["features"]
    if scale is None:
        scale = max((abs(f["score"]) for f in feats), default=0.0)
    p = QPainter(pm)
    cw, ch = size / cols, size / rows
    for i, f in enumerate(feats):
        a = 0 if scale <= 0 else int(170 * min(1.0, abs(f["score"]) / scale))
        r, g, b = POS if f["score"] >= 0 else NEG
        p.fillRect(int((i % cols) * cw), int((i // cols) * ch), int(cw + 1), int(ch + 1), QColor(r, g, b, a))
    p.end()
    return pm


class _Side(QWidget):
    """One version's explanation of the current example."""

    def __init__(self, title: str) -> None:
        super().__init__()
        lay = QVBoxLayout(self)
        self.title = QLabel(title)
        self.title.setObjectName("explain-side-title")
        self.prediction = QLabel("")
        self.body = QLabel("")
        self.body.setWordWrap(True)
        self.body.setTextFormat(Qt.TextFormat.RichText)
        self.body.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        for w in (self.title, self.prediction, self.body):
            lay.addWidget(w)
        lay.addStretch(1)

    def show_example(self, ref: str, doc: dict[str, Any] | None, example: dict[str, Any] | None,
                     scale: float | None = None) -> None:
        self.title.setText(ref)
        self.body.setPixmap(QPixmap())
        if doc is None or example is None:
            self.prediction.setText("no stored attributions for this example")
            self.body.setText("")
            return
        conf = example.get("confidence")
        conf_txt = f" · confidence {conf:.3f}" if isinstance(conf, (int, float)) else ""
        self.prediction.setText(f"prediction: {example['prediction']}{conf_txt} · {doc['method']}")
        if example.get("grid"):
            self.body.setPixmap(overlay_pixmap(example, scale=scale))
        else:
            self.body.setText(token_html(example, scale))


class ExplainView(QWidget):
    """The Explain tab (registered in relman.ui.views). `refresh` / `on_selection` follow the
    window's selection; `set_context` can also be called directly."""

    name = "explain"
    title = "Explain"
    jobs_queued = Signal(list)
    loaded = Signal(int, object)  # (request number, what load_explain_view returned or the error text)

    def __init__(self, window: Any = None) -> None:
        super().__init__()
        self.window = window
        self.catalog: Any = window.catalog if window is not None else None
        self.version_id: int | None = None
        self.pair: dict[str, Any] = {"version": None, "against": None, "rows": [], "flips": []}
        self.pending: list[int] = []
        self.generation = 0  # the newest load request; older answers are dropped
        self.loading = False
        self.loaded.connect(self._on_loaded)
        self.on_error: Callable[[str], None] = (window.show_error if window is not None
                                                 else (lambda text: self.status.setText(text)))
        root = QVBoxLayout(self)
        bar = QHBoxLayout()
        self.version_label = QLabel("Select a version")
        self.version_label.setObjectName("explain-version")
        self.against = QComboBox()
        self.against.setObjectName("explain-against")
        self.against.currentIndexChanged.connect(lambda _i: self.reload())
        self.dataset = QComboBox()
        self.dataset.setObjectName("explain-dataset")
        self.method = QComboBox()
        self.method.setObjectName("explain-method")
        self.method.addItems(["auto", "ig", "occlusion", "shap", "lime", "attention"])
        self.shown = QComboBox()  # which stored map to show (IG, attention rollout, ...)
        self.shown.setObjectName("explain-shown")
        self.shown.addItem("newest", None)
        self.shown.currentIndexChanged.connect(lambda _i: self.reload())
        self.examples = QSpinBox()
        self.examples.setRange(1, 10000)
        self.examples.setValue(8)
        self.compute = QPushButton("Compute attributions")
        self.compute.setObjectName("explain-compute")
        for combo in (self.against, self.dataset):  # long refs must not widen a laptop window
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(6)
        self.compute.clicked.connect(self.queue_jobs)
        # two rows, so the controls fit a 1024-pixel window beside the side docks: what is shown
        # (against which version, which stored map), then what to compute
        for label, w in (("vs", self.against), ("show", self.shown)):
            bar.addWidget(QLabel(label))
            bar.addWidget(w)
        bar.addStretch(1)
        compute_bar = QHBoxLayout()
        for label, w in (("data", self.dataset), ("method", self.method), ("examples", self.examples)):
            compute_bar.addWidget(QLabel(label))
            compute_bar.addWidget(w)
        compute_bar.addWidget(self.compute)
        compute_bar.addStretch(1)
        self.version_label.setWordWrap(True)
        root.addWidget(self.version_label)  # its own line: a long ref never widens the window
        root.addLayout(bar)
        root.addLayout(compute_bar)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status = QLabel("")
        self.status.setObjectName("hint")
        self.warning = QLabel("")
        self.warning.setObjectName("explain-warning")  # the model-randomisation check failed
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet("color: #b00020; font-weight: bold;")
        self.warning.setVisible(False)
        root.addWidget(self.progress)
        root.addWidget(self.status)
        root.addWidget(self.warning)
        split = QSplitter()
        lists = QWidget()
        ll = QGridLayout(lists)
        ll.addWidget(QLabel("Examples"), 0, 0)
        self.example_list = QListWidget()
        self.example_list.setObjectName("explain-examples")
        self.example_list.currentRowChanged.connect(lambda _r: self._show_current(self.example_list))
        ll.addWidget(self.example_list, 1, 0)
        flips = QLabel("Flips (prediction changed, most divergent first)")
        flips.setWordWrap(True)
        ll.addWidget(flips, 2, 0)
        self.flip_list = QListWidget()
        self.flip_list.setObjectName("explain-flips")
        self.flip_list.currentRowChanged.connect(lambda _r: self._show_current(self.flip_list))
        ll.addWidget(self.flip_list, 3, 0)
        split.addWidget(lists)
        self.left, self.right = _Side("version"), _Side("compared with")
        sides = QWidget()
        sl = QHBoxLayout(sides)
        sl.addWidget(self.left, 1)
        sl.addWidget(self.right, 1)
        split.addWidget(sides)
        split.setStretchFactor(1, 3)
        root.addWidget(split, 1)
        self.legend = QLabel(LEGEND_HTML)  # what the colours mean, always in view
        self.legend.setObjectName("explain-legend")
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.legend.setWordWrap(True)
        root.addWidget(self.legend)
        self.timer = QTimer(self)
        self.timer.setInterval(500)
        self.timer.timeout.connect(self.poll_jobs)

    # -- the view protocol (relman.ui.views) --------------------------------------------------
    def refresh(self, state: Any) -> None:
        datasets = [r[0] for r in state.catalog.conn.execute("SELECT name FROM datasets ORDER BY name")]
        self.set_context(state.catalog, state.selected[0] if state.selected else None,
                         [(v.id, v.ref) for v in state.snapshot.versions], datasets)

    def on_selection(self, state: Any) -> None:
        self.refresh(state)

    def on_jobs(self, catalog: Any) -> None:
        if self.pending:
            self.poll_jobs()

    def apply_theme(self, dark: bool) -> None:
        """The heat colours read on both themes; nothing to switch."""

    # -- data in ----------------------------------------------------------------------------
    def set_context(self, catalog: Any, version_id: int | None, versions: list[tuple[int, str]] | None = None,
                    datasets: list[str] | None = None) -> None:
        """The catalog, the selected version, and the choices for the comparison / dataset."""
        self.catalog = catalog
        changed = version_id != self.version_id
        self.version_id = version_id
        if datasets is not None:
            keep = self.dataset.currentText()
            self.dataset.blockSignals(True)
            self.dataset.clear()
            self.dataset.addItems(datasets)
            if keep in datasets:
                self.dataset.setCurrentText(keep)
            self.dataset.blockSignals(False)
        if changed or versions is not None:
            self.against.blockSignals(True)
            self.against.clear()
            self.against.addItem("parent (default)", None)
            for vid, ref in versions or []:
                if vid != version_id:
                    self.against.addItem(ref, vid)
            self.against.blockSignals(False)
        self.reload()

    def reload(self) -> None:
        """Ask a worker thread for the stored attributions of the selection; `_on_loaded` fills
        the view when they arrive (only the newest request's answer is used)."""
        from relman.app.explain import load_explain_view

        self.example_list.clear()
        self.flip_list.clear()
        self.pair = {"version": None, "against": None, "rows": [], "flips": []}
        self.warning.setVisible(False)
        self.generation += 1
        if self.catalog is None or self.version_id is None:
            self.version_label.setText("Select a version")
            self.loading = False
            self._show(None)
            return
        self.version_label.setText(self.catalog.get_version(self.version_id).ref)
        self.status.setText("loading stored attributions…")
        self.loading = True
        gen, root, vid = self.generation, self.catalog.root, self.version_id
        against, method = self.against.currentData(), self.shown.currentData()

        def work() -> None:
            from relman.errors import RelmanError

            try:
                result: Any = load_explain_view(root, vid, against, method)
            except RelmanError as e:
                result = str(e)
            self.loaded.emit(gen, result)  # queued to the GUI thread

        threading.Thread(target=work, name=f"explain-load-{gen}", daemon=True).start()

    def _on_loaded(self, gen: int, result: Any) -> None:
        if gen != self.generation:
            return  # a newer request is on its way
        self.loading = False
        if isinstance(result, str):
            self.status.setText("")
            self.on_error(result)
            return
        self.pair = result["pair"]
        warning = result["warning"]
        self.warning.setText(f"⚠ {warning}" if warning else "")
        self.warning.setVisible(bool(warning))
        chosen = self.shown.currentData()
        self.shown.blockSignals(True)
        self.shown.clear()
        self.shown.addItem("newest", None)
        for m in result["methods"]:
            self.shown.addItem(m, m)
        self.shown.setCurrentIndex(max(0, self.shown.findData(chosen)) if chosen else 0)
        self.shown.blockSignals(False)
        doc = self.pair["version"]
        if doc is None:
            self.status.setText("No stored attributions: choose data and press 'Compute attributions' "
                                "(or run the explain suite).")
            self._show(None)
            return
        by_index = {r["index"]: r for r in self.pair["rows"]}
        for e in doc["examples"]:
            r = by_index.get(e["index"])
            extra = f"  ρ={r['rho']:.2f}" if r and r["rho"] == r["rho"] else ""
            item = QListWidgetItem(f"#{e['index']}  {e['prediction']}{extra}")
            item.setData(Qt.ItemDataRole.UserRole, e["index"])
            self.example_list.addItem(item)
        for r in self.pair["flips"]:
            item = QListWidgetItem(f"#{r['index']}  {r['parent_prediction']} → {r['child_prediction']}  "
                                   f"divergence {r['divergence']:.2f}")
            item.setData(Qt.ItemDataRole.UserRole, r["index"])
            self.flip_list.addItem(item)
        against = self.pair["against"]
        self.status.setText(f"{doc['method']} on {doc.get('dataset')}, {len(doc['examples'])} examples"
                            + (f"; compared with {against['version']}" if against else "; nothing to compare with"))
        if self.example_list.count():
            self.example_list.setCurrentRow(0)

    def _show_current(self, widget: QListWidget) -> None:
        item = widget.currentItem()
        self._show(item.data(Qt.ItemDataRole.UserRole) if item is not None else None)

    def _show(self, index: int | None) -> None:
        def find(doc: dict[str, Any] | None) -> dict[str, Any] | None:
            if doc is None or index is None:
                return None
            return next((e for e in doc["examples"] if e["index"] == index), None)

        v, a = self.pair["version"], self.pair["against"]
        ev, ea = find(v), find(a)
        scale = shared_scale(ev, ea)  # both sides on one scale, so their colours compare
        self.left.show_example(v["version"] if v else "version", v, ev, scale)
        self.right.show_example(a["version"] if a else "compared with", a, ea, scale)

    # -- jobs out ---------------------------------------------------------------------------
    def queue_jobs(self) -> list[int]:
        """Ask for explain jobs for the version and its comparison (never computed here): the
        window's work controller queues them; without a window (tests of the view alone) the
        app layer is called directly."""
        from relman.errors import RelmanError

        if self.catalog is None or self.version_id is None:
            self.on_error("Select a version to explain first.")
            return []
        if not self.dataset.currentText():
            self.on_error("Register a dataset to explain on first.")
            return []
        ref = self.catalog.get_version(self.version_id).ref
        against_id = self.against.currentData()
        if against_id is None:
            parents = self.catalog.parents(self.version_id)
            against_id = parents[0]["parent_id"] if parents else None
        against = self.catalog.get_version(against_id).ref if against_id is not None else None
        request = {"ref": ref, "against": against, "dataset": self.dataset.currentText(),
                   "examples": self.examples.value(), "method": self.method.currentText()}
        if self.window is not None:
            ids = self.window.work.queue_explain(**request)
        else:
            from relman.app.explain import queue_explain_pair

            try:
                ids = queue_explain_pair(self.catalog, request.pop("ref"), request.pop("against"),
                                         request.pop("dataset"), **request)
            except RelmanError as e:
                self.on_error(str(e))
                ids = []
        if not ids:
            return []
        self.pending = ids
        self.progress.setValue(0)
        self.progress.setVisible(True)
        self.status.setText(f"queued explain job(s) {', '.join(map(str, ids))}")
        self.timer.start()
        self.jobs_queued.emit(ids)
        return ids

    def poll_jobs(self) -> None:
        if not self.pending or self.catalog is None:
            self.timer.stop()
            return
        marks = ",".join("?" * len(self.pending))
        rows = self.catalog.query(f"SELECT id, status, progress, error FROM jobs WHERE id IN ({marks})", self.pending)
        done = [r for r in rows if r["status"] in ("succeeded", "failed", "cancelled")]
        self.progress.setValue(int(100 * sum(1.0 if r in done else (r["progress"] or 0) for r in rows)
                                   / max(1, len(rows))))
        if len(done) == len(rows):
            self.timer.stop()
            self.pending = []
            self.progress.setVisible(False)
            failed = [r for r in rows if r["status"] != "succeeded"]
            if failed:
                self.on_error(f"explain job {failed[0]['id']} {failed[0]['status']}: {failed[0]['error'] or ''}")
            self.reload()
