"""The shared shape of a task adapter ("runner"): prepare a slice of a dataset, then predict.

`prepare` (tokenise / preprocess, move to the device) and `predict` (run the model, post-process
its output) are separate so a latency measurement times only inference, and so the quality
suite and a plain loop over the same session do the same work per batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from relman.data.dataset import Dataset
from relman.errors import EvaluationError
from relman.tasks.backends import Backend
from relman.tasks.scores import agreement_and_kl, classification_report
from relman.tasks.specs import TaskSpec, get_task


@dataclass
class Batch:
    """One prepared batch: `native` feeds the backend; `host` keeps numpy copies of the inputs
    (attention mask, ids) for post-processing; `labels` are the dataset labels, if any."""

    native: Any
    host: dict[str, np.ndarray]
    size: int
    labels: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class Runner:
    """Base adapter. Subclasses set `task` (a name in the task table, which says the dataset
    kinds they accept, their output and labels) and implement `encode` (rows → numpy inputs),
    `synthetic_inputs` and, where they differ from a row classifier's, `predict`, `quality`
    and `fidelity`."""

    task: str = ""

    def __init__(self, folder: Path, fmt: str, backend: Backend, preprocessor: Any, config: dict[str, Any],
                 threads: int | None) -> None:
        self.folder = Path(folder)
        self.fmt = fmt
        self.backend = backend
        self.preprocessor = preprocessor
        self.config = config
        self.threads = threads

    @property
    def device(self) -> str:
        return self.backend.device

    @property
    def spec(self) -> TaskSpec:
        return get_task(self.task, EvaluationError)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The dataset kinds this adapter reads (from the task table)."""
        return self.spec.data_kinds

    @property
    def label_names(self) -> list[str]:
        id2label = self.config.get("id2label") or {}
        return [str(id2label[k]) for k in sorted(id2label, key=lambda k: int(k))]

    # -- data ---------------------------------------------------------------------------------
    def check_dataset(self, ds: Dataset) -> None:
        """A clear error when the dataset cannot feed this task (e.g. images to a text model)."""
        if ds.kind not in self.kinds:
            want = " or ".join(self.kinds)
            raise EvaluationError(f"dataset '{ds.name}' holds {ds.kind} data, but a {self.task} model needs "
                                  f"{want} data")
        if len(ds) == 0:
            raise EvaluationError(f"dataset '{ds.name}' has no rows to evaluate on")

    def encode(self, ds: Dataset, seq_len: int | None = None) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def synthetic_inputs(self, batch_size: int, seq_len: int | None, seed: int = 0) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def prepare(self, ds: Dataset, seq_len: int | None = None) -> Batch:
        """Preprocess the rows of `ds` (one batch) and move them to the device."""
        arrays = self.encode(ds, seq_len)
        return Batch(native=self.backend.to_native(arrays), host=arrays, size=len(ds), labels=ds.labels)

    def prepare_synthetic(self, batch_size: int, seq_len: int | None, seed: int = 0) -> Batch:
        """A batch of the exact shape asked for, when no dataset is given (latency, memory)."""
        arrays = self.synthetic_inputs(batch_size, seq_len, seed)
        return Batch(native=self.backend.to_native(arrays), host=arrays, size=batch_size)

    def batches(self, ds: Dataset, batch_size: int, seq_len: int | None = None) -> Iterator[Batch]:
        for start in range(0, len(ds), batch_size):
            yield self.prepare(ds.take(np.arange(start, min(start + batch_size, len(ds)))), seq_len)

    # -- model ---------------------------------------------------------------------------------
    def predict(self, batch: Batch) -> np.ndarray:
        """Logits (classification, causal LM) or embeddings (feature extraction)."""
        return self.backend.run(batch.native)

    def predict_dataset(self, ds: Dataset, batch_size: int, seq_len: int | None = None,
                        on_batch: Any = None) -> np.ndarray:
        """Predictions for every row, concatenated (classification logits, embeddings)."""
        outs = []
        done = 0
        for batch in self.batches(ds, batch_size, seq_len):
            outs.append(self.predict(batch))
            done += batch.size
            if on_batch is not None:
                on_batch(done, len(ds))
        return np.concatenate(outs, axis=0)

    # -- scores (what the quality and fidelity suites store) -----------------------------------
    def quality(self, ds: Dataset, batch_size: int,
                on_batch: Callable[[int, int], None] | None = None) -> dict[str, float]:
        """Task quality on the labelled rows of `ds`: a classification report for a row
        classifier; other tasks override this (or the task table lists no quality suite)."""
        if not self.spec.classifies_rows:
            raise EvaluationError(f"no quality measure for a {self.task} model")
        y_true = self.model_labels_for(ds)
        logits = self.predict_dataset(ds, batch_size, on_batch=on_batch)
        return classification_report(y_true, logits.argmax(axis=1), self.label_names)

    def fidelity(self, batch: Batch, out: np.ndarray, parent_out: np.ndarray) -> dict[str, np.ndarray]:
        """Per-row (or per-position) comparison of this version's output on `batch` with its
        parent's: top-1 agreement and KL(parent || version) of the softmax distributions."""
        agree, kl = agreement_and_kl(parent_out, out)
        return {"agreement": agree, "kl_div": kl}

    def summarise_fidelity(self, parts: dict[str, np.ndarray]) -> dict[str, float]:
        """The stored fidelity metrics from the concatenated `fidelity` parts (their means)."""
        return {name: float(values.mean()) for name, values in parts.items()}

    def model_labels_for(self, ds: Dataset) -> np.ndarray:
        """Dataset labels translated to the model's output indices (by label name, or by position
        when the model's labels are the generic LABEL_i); a clear error for labels it lacks."""
        if ds.labels is None:
            raise EvaluationError(f"dataset '{ds.name}' has no labels")
        model_names = self.label_names
        ds_names = [str(n) for n in ds.label_names] or [str(i) for i in range(int(ds.labels.max()) + 1)]
        generic = all(n == f"LABEL_{i}" for i, n in enumerate(model_names))
        if generic:
            if len(ds_names) > len(model_names):
                raise EvaluationError(f"dataset '{ds.name}' has {len(ds_names)} labels but the model predicts "
                                      f"only {len(model_names)} classes")
            mapping = np.arange(len(ds_names))
        else:
            index = {n: i for i, n in enumerate(model_names)}
            missing = [n for n in ds_names if n not in index]
            if missing:
                raise EvaluationError(f"dataset '{ds.name}' has labels the model does not know: "
                                      f"{', '.join(missing[:5])} (model labels: {', '.join(model_names[:10])})")
            mapping = np.array([index[n] for n in ds_names], dtype=np.int64)
        return mapping[np.asarray(ds.labels, dtype=np.int64)]
