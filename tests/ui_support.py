"""Helpers shared by the GUI tests: a catalog built by the real core, a window on it, and a
way to drive modal dialogs without blocking on exec()."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

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
