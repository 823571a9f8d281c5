"""Task adapters: run a version (PyTorch or ONNX) on a dataset and return predictions.

One adapter per task, named in the task table (`relman.tasks.specs`): text classification
(logits), image classification (logits), feature extraction (normalised mean-pooled sentence
embeddings), causal LM (next-token logits and per-token losses), and whatever the table adds.
`open_runner(folder, fmt, task, device, threads)` is the one entry point; `runner.prepare(rows)`
preprocesses, `runner.predict(batch)` only runs the model, so the timing of inference never
includes tokenisation.

Worker-only: the adapter modules import numpy/torch/transformers; this package's `__init__`
imports nothing heavy so it can be named by registries.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relman.tasks.base import Runner


def runner_class(task: str | None) -> type["Runner"]:
    """The adapter class the task table names for `task` (imports its module: worker-only)."""
    from relman import targets
    from relman.errors import EvaluationError
    from relman.tasks.specs import get_task

    return targets.resolve(get_task(task, EvaluationError).adapter)


def open_runner(folder: Path | str, fmt: str, task: str | None, device: str = "auto",
                threads: int | None = None) -> "Runner":
    """Load the model in `folder` (format 'hf', 'onnx' or a registered torch format) for `task`."""
    from relman.errors import EvaluationError
    from relman.modelio.loading import RUNNER_WRAPPERS, load_preprocessor, read_config
    from relman.tasks.backends import open_backend, resolve_device
    from relman.tasks.specs import TASKS

    if task not in TASKS:
        raise EvaluationError(f"cannot evaluate task '{task}' (known: {', '.join(TASKS)})")
    runner_cls = runner_class(task)
    folder = Path(folder)
    device = resolve_device(device)
    if fmt in RUNNER_WRAPPERS:  # a post-processor / ensemble: it opens the version(s) it wraps itself
        from relman import targets

        runner: "Runner" = targets.resolve(RUNNER_WRAPPERS[fmt])(folder, task, device, threads, open_runner)
        return runner
    config = read_config(folder)
    preprocessor = load_preprocessor(folder, task)
    backend = open_backend(folder, fmt, task, device, threads)
    return runner_cls(folder, fmt, backend, preprocessor, config, threads)
