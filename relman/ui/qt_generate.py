"""Generate view: the same prompts through several causal-LM versions, answers side by side.

Pick versions (the selection's causal LMs are ticked), write or open a prompt set (one prompt
per line, `\\n` for a line break, an optional expected answer after a tab; or a JSONL file
with "prompt" / "answer"), press Generate. The view never generates itself and never imports
torch: the work controller queues one "generate" job (`relman.app.generation`), the view
follows its row (the window's job hook plus a light timer) and, when it has succeeded, fills
a table: one row per prompt, one column per version. A cell whose answer differs from the
first version's is tinted and says so in its tooltip; with expected answers each cell starts
with ✓ or ✗ (exact match), and each column's header sums its exact matches, median time to
first token and decode tokens/s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPlainTextEdit,
                               QProgressBar, QPushButton, QSpinBox, QSplitter, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

DIFF_LIGHT, DIFF_DARK = QColor(255, 236, 179), QColor(102, 77, 0)
FINISHED = ("succeeded", "failed", "cancelled")


def column_header(version: dict[str, Any]) -> str:
    """"ref" plus its figures: exact matches, median time to first token, decode tokens/s."""
    parts = []
    if version.get("exact_match") is not None:
        parts.append(f"EM {version['exact_match']}/{version['answered']}")
    if version.get("tokens_per_s"):
        parts.append(f"{version['tokens_per_s']:.0f} tok/s")
    if version.get("ttft_p50_ms") is not None:
        parts.append(f"TTFT {version['ttft_p50_ms']:.1f} ms")
    return version["ref"] + ("\n" + " · ".join(parts) if parts else "")


class GenerateView(QWidget):
    """The Generate tab (registered in relman.ui.views)."""

    name = "generate"
    title = "Generate"
    results_shown = Signal(int)  # the job id whose results are on screen
    job_queued = Signal(int)

    def __init__(self, window: Any = None) -> None:
        super().__init__()
        self.window = window
        self.catalog: Any = window.catalog if window is not None else None
        self.pending: int | None = None
        self.result: dict[str, Any] | None = None
        self.dark = False
        self.on_error: Callable[[str], None] = (window.show_error if window is not None
                                                 else (lambda text: self.status.setText(text)))
        root = QVBoxLayout(self)
        top = QSplitter()
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(QLabel("Causal-LM versions"))
        self.versions = QListWidget()
        self.versions.setObjectName("generate-versions")
        ll.addWidget(self.versions)
        top.addWidget(left)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        hint = QLabel("Prompts: one per line, \\n for a line break, a tab then the expected answer (optional)")
        hint.setWordWrap(True)
        hint.setObjectName("hint")
        rl.addWidget(hint)
        self.prompts = QPlainTextEdit()
        self.prompts.setObjectName("generate-prompts")
        self.prompts.setPlaceholderText("Q: What colour is the zarn?\\nA:\tblue")
        rl.addWidget(self.prompts)
        bar = QHBoxLayout()
        self.open_button = QPushButton("Open prompt set…")
        self.open_button.setObjectName("generate-open")
        self.open_button.clicked.connect(self._choose_file)
        self.max_tokens = QSpinBox()
        self.max_tokens.setObjectName("generate-max-tokens")
        self.max_tokens.setRange(1, 512)
        self.max_tokens.setValue(16)
        self.run_button = QPushButton("Generate")
        self.run_button.setObjectName("generate-run")
        self.run_button.clicked.connect(self.queue_job)
        bar.addWidget(self.open_button)
        bar.addWidget(QLabel("max new tokens"))
        bar.addWidget(self.max_tokens)
        bar.addStretch(1)
        bar.addWidget(self.run_button)
        rl.addLayout(bar)
        top.addWidget(right)
        top.setStretchFactor(1, 2)
        root.addWidget(top)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status = QLabel("")
        self.status.setObjectName("hint")
        self.status.setWordWrap(True)
        root.addWidget(self.progress)
        root.addWidget(self.status)
        self.table = QTableWidget(0, 0)
        self.table.setObjectName("generate-results")
        self.table.setWordWrap(True)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        root.addWidget(self.table, 1)
        self.timer = QTimer(self)
        self.timer.setInterval(300)
        self.timer.timeout.connect(self.poll_job)

    # -- the view protocol (relman.ui.views) --------------------------------------------------
    def refresh(self, state: Any) -> None:
        self.catalog = state.catalog
        self.set_versions([(v.id, v.ref) for v in state.snapshot.versions if v.task == "causal-lm"],
                          set(state.selected))

    def on_selection(self, state: Any) -> None:
        self.refresh(state)

    def on_jobs(self, catalog: Any) -> None:
        if self.pending is not None:
            self.poll_job()

    def apply_theme(self, dark: bool) -> None:
        self.dark = dark
        if self.result is not None:
            self.show_result(self.result)

    # -- data in ----------------------------------------------------------------------------
    def set_versions(self, versions: list[tuple[int, str]], selected: set[int]) -> None:
        """The causal-LM versions to choose from; the selected ones ticked (a choice the user
        made by hand survives a refresh)."""
        ticked = {self.versions.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.versions.count())
                  if self.versions.item(i).checkState() == Qt.CheckState.Checked}
        self.versions.clear()
        for vid, ref in versions:
            item = QListWidgetItem(ref)
            item.setData(Qt.ItemDataRole.UserRole, vid)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            on = vid in ticked or vid in selected
            item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
            self.versions.addItem(item)
        if not versions:
            self.status.setText("No causal-LM versions in this catalog.")

    def choose_only(self, ids: list[int]) -> None:
        """Tick exactly `ids` ("Generate with selected"): hand-ticked others are unticked."""
        wanted = {int(i) for i in ids}
        for i in range(self.versions.count()):
            item = self.versions.item(i)
            on = item.data(Qt.ItemDataRole.UserRole) in wanted
            item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)

    def chosen_refs(self) -> list[str]:
        return [self.versions.item(i).text() for i in range(self.versions.count())
                if self.versions.item(i).checkState() == Qt.CheckState.Checked]

    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open prompt set", "", "JSON lines (*.jsonl *.json);;All files (*)")
        if path:
            self.load_prompt_file(Path(path))

    def load_prompt_file(self, path: Path) -> None:
        from relman.app.generation import format_prompt_lines, read_prompt_file
        from relman.errors import RelmanError

        try:
            self.prompts.setPlainText(format_prompt_lines(read_prompt_file(path)))
        except (RelmanError, OSError) as e:
            self.on_error(str(e))

    # -- the job ----------------------------------------------------------------------------
    def queue_job(self) -> int | None:
        """Ask for one generation job (never run here): through the window's work controller,
        or the app layer directly when the view stands alone (tests)."""
        from relman.app.generation import parse_prompt_lines, queue_generation
        from relman.errors import RelmanError

        if self.catalog is None:
            return None
        refs, prompts = self.chosen_refs(), parse_prompt_lines(self.prompts.toPlainText())
        if self.window is not None:
            job = self.window.work.queue_generation(refs, prompts, max_new_tokens=self.max_tokens.value())
        else:
            try:
                job = queue_generation(self.catalog, refs, prompts, max_new_tokens=self.max_tokens.value())
            except RelmanError as e:
                self.on_error(str(e))
                job = None
        if job is None:
            return None
        self.pending = job
        self.run_button.setEnabled(False)
        self.progress.setValue(0)
        self.progress.setVisible(True)
        self.status.setText(f"queued generation job {job}: {len(prompts)} prompts through {len(refs)} versions")
        self.timer.start()
        self.job_queued.emit(job)
        return job

    def poll_job(self) -> None:
        if self.pending is None or self.catalog is None:
            self.timer.stop()
            return
        row = self.catalog.query("SELECT id, status, progress, message, error FROM jobs WHERE id = ?", [self.pending])
        if not row:
            return
        r = row[0]
        self.progress.setValue(int(100 * (r["progress"] or 0)))
        if r["status"] not in FINISHED:
            if r["message"]:
                self.status.setText(str(r["message"]))
            return
        job, self.pending = self.pending, None
        self.timer.stop()
        self.progress.setVisible(False)
        self.run_button.setEnabled(True)
        if r["status"] != "succeeded":
            self.on_error(f"generation job {job} {r['status']}: {r['error'] or ''}")
            return
        from relman.app.generation import result_of

        result = result_of(self.catalog, job)
        if result:
            self.show_result(result)
            self.status.setText(f"generation job {job}: {len(result['prompts'])} prompts, "
                                f"{len(result['versions'])} versions, up to {result['max_new_tokens']} new tokens")
            self.results_shown.emit(job)

    # -- results ----------------------------------------------------------------------------
    def show_result(self, result: dict[str, Any]) -> None:
        self.result = result
        prompts, versions = result["prompts"], result["versions"]
        answers = any(p.get("answer") for p in prompts)
        fixed = ["Prompt"] + (["Expected"] if answers else [])
        self.table.clear()
        self.table.setRowCount(len(prompts))
        self.table.setColumnCount(len(fixed) + len(versions))
        self.table.setHorizontalHeaderLabels(fixed + [column_header(v) for v in versions])
        tint = DIFF_DARK if self.dark else DIFF_LIGHT
        for i, p in enumerate(prompts):
            self.table.setItem(i, 0, QTableWidgetItem(p["prompt"]))
            if answers:
                self.table.setItem(i, 1, QTableWidgetItem(p.get("answer", "")))
            first = versions[0]["outputs"][i]["text"] if versions else ""
            for k, v in enumerate(versions):
                out = v["outputs"][i]
                mark = ("✓ " if out["exact_match"] else "✗ ") if "exact_match" in out else ""
                item = QTableWidgetItem(mark + out["text"])
                item.setData(Qt.ItemDataRole.UserRole, {"differs": k > 0 and out["text"] != first,
                                                        "exact_match": out.get("exact_match")})
                tip = f"{out['new_tokens']} new tokens, first after {out['ttft_ms']:.1f} ms"
                if out.get("tokens_per_s"):
                    tip += f", {out['tokens_per_s']:.0f} tokens/s"
                if k > 0 and out["text"] != first:
                    item.setBackground(QBrush(tint))
                    tip += f"\ndiffers from {versions[0]['ref']}"
                item.setToolTip(tip)
                self.table.setItem(i, len(fixed) + k, item)
        self.table.resizeRowsToContents()

    def cell(self, prompt: int, version: int) -> QTableWidgetItem | None:
        """The answer of version column `version` (0 = first version) to prompt `prompt`."""
        fixed = 2 if self.result and any(p.get("answer") for p in self.result["prompts"]) else 1
        return self.table.item(prompt, fixed + version)
