"""Helpers shared by the GUI tests: a catalog built by the real core, a window on it, and a
way to drive modal dialogs without blocking on exec()."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import time

from relman.catalog import Catalog, Metric
from relman.jobs.testing import wait_until as wait_for  # noqa: F401  (a deadline on a condition)


def build_family(catalog: Catalog, vit_folder: Path, model: str = "digits-vit") -> dict[str, Any]:
    """Import a real tiny ViT, derive two children (one a merge of two parents) with real
    artifacts and lineage, and store metrics the way evaluation jobs do."""
    from relman.app.models import import_model

    base = import_model(catalog, vit_folder, model)
    files = {p.relative_to(vit_folder).as_posix(): p for p in vit_folder.rglob("*") if p.is_file()}
    pruned = catalog.add_version(model, files, format="hf", task=base.task, params=base.params,
                                 recipe={"name": "prune-magnitude", "params": {"sparsity": 0.5}},
                                 parents=[(base.id, None)], relation="prune-magnitude", event_kind="job-result")
    merged = catalog.add_version(model, files, format="hf", task=base.task, params=base.params,
                                 recipe={"name": "merge-fedavg", "params": {}},
                                 parents=[(base.id, 0.5), (pruned.id, 0.5)], relation="merge-fedavg",
                                 event_kind="job-result")
    for v, acc, lat, size in ((base, 0.91, 3.2, 0.080), (pruned, 0.88, 2.1, 0.041), (merged, 0.80, 2.6, 0.060)):
        catalog.add_metrics(v.id, [Metric("quality", "accuracy", acc, {"device": "cpu"}),
                                   Metric("latency", "latency_p95_ms", lat, {"device": "cpu", "batch": 1}),
                                   Metric("size", "size_mb", size)])
    return {"base": base, "pruned": pruned, "merged": merged}


def accept_with(fill: Callable[[Any], None]) -> Callable[[Any], int]:
    """A dialog runner for MainWindow.dialog_runner: fill the dialog like a user, press OK."""
    def run(dialog: Any) -> int:
        fill(dialog)
        dialog.accept()
        return dialog.result()
    return run


def _runqueue_wait_s() -> float | None:
    """Seconds this thread has spent runnable but waiting for a CPU (Linux schedstat)."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


class StallProbe:
    """Fires every 10 ms on the main thread and records the gaps between firings.

    `gaps`: wall-clock gaps (what a user sees). `own_gaps`: the same minus the time the main
    thread waited for a CPU while runnable (Linux run-queue wait, /proc/thread-self/schedstat),
    i.e. the time it spent working or blocked: what the code is answerable for, also on a
    machine whose cores are busy with other work. Where schedstat is missing both are equal."""

    def __init__(self, interval_ms: int = 10) -> None:
        from PySide6.QtCore import QTimer

        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.last = 0.0
        self.last_wait: float | None = None
        self.gaps: list[float] = []
        self.own_gaps: list[float] = []
        self.cpu_gaps: list[float] = []  # the main thread's CPU time in each gap
        self.last_cpu = 0.0
        self.marks: list[tuple[int, str]] = []  # (index of the next gap, what the test did)

    def mark(self, what: str) -> None:
        """Label the gaps from here on (failure messages say which step stalled)."""
        self.marks.append((len(self.gaps), what))

    def worst_where(self, n: int = 3) -> str:
        """The `n` longest own gaps with the step they fell in, for a failure message."""
        order = sorted(range(len(self.own_gaps)), key=lambda i: -self.own_gaps[i])[:n]
        out = []
        for i in order:
            step = next((what for at, what in reversed(self.marks) if at <= i), "start")
            out.append(f"{self.own_gaps[i] * 1000:.0f} ms own ({self.cpu_gaps[i] * 1000:.0f} ms CPU) / "
                       f"{self.gaps[i] * 1000:.0f} ms wall during '{step}'")
        return "; ".join(out)

    def start(self) -> None:
        self.last = time.perf_counter()
        self.last_wait = _runqueue_wait_s()
        self.last_cpu = time.thread_time()
        self.timer.start()

    def _tick(self) -> None:
        now = time.perf_counter()
        wait = _runqueue_wait_s()
        gap = now - self.last
        waited = (wait - self.last_wait) if wait is not None and self.last_wait is not None else 0.0
        cpu = time.thread_time()
        self.gaps.append(gap)
        self.own_gaps.append(max(0.0, gap - waited))
        self.cpu_gaps.append(cpu - self.last_cpu)
        self.last, self.last_wait, self.last_cpu = now, wait, cpu

    def stop(self) -> float:
        self.timer.stop()
        return max(self.gaps) if self.gaps else 0.0

    def worst_own(self) -> float:
        return max(self.own_gaps) if self.own_gaps else 0.0
