"""What a suite gets: the version on disk, the dataset, the settings, and one shared runner.

Every metric a suite returns goes through `env.metric(...)`, which attaches the same context
(device, threads, dataset name/sha, library versions, format) so numbers from different jobs
can be compared only when they were measured under the same conditions.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from relman.catalog import Metric
from relman.data.dataset import Dataset
from relman.errors import EvaluationError

if TYPE_CHECKING:
    from relman.catalog import Catalog, VersionInfo
    from relman.context import WorkContext
    from relman.tasks.base import Runner


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for lib in ("torch", "transformers", "onnxruntime", "numpy"):
        try:
            out[lib] = md.version(lib)
        except md.PackageNotFoundError:
            pass
    return out


@dataclass
class ModelRef:
    """A version laid out on disk, ready to open."""

    info: "VersionInfo | None"
    folder: Path
    fmt: str
    task: str

    @property
    def ref(self) -> str:
        return self.info.ref if self.info is not None else str(self.folder)


@dataclass
class Comparator:
    """A reference version run beside the evaluated one: which roles it plays ("parent",
    "production"), its ref, and its runner."""

    scopes: list[str]
    ref: str
    runner: "Runner"


@dataclass
class SuiteEnv:
    model: ModelRef
    device: str
    threads: int | None
    options: dict[str, Any]
    batch_sizes: list[int]
    seq_lens: list[int | None]
    dataset: Dataset | None = None
    parent: ModelRef | None = None
    production: ModelRef | None = None
    max_samples: int | None = None
    ctx: "WorkContext | None" = None
    catalog: "Catalog | None" = None
    _runner: "Runner | None" = field(default=None, repr=False)
    _versions: dict[str, str] = field(default_factory=dict, repr=False)
    _others: dict[str, "Runner"] = field(default_factory=dict, repr=False)
    _comparators: "list[Comparator] | None" = field(default=None, repr=False)
    progress_hook: Callable[[float, str], None] | None = None
    # Files a suite produced besides metrics (e.g. attributions), stored with the metrics in
    # the job's one transaction (relman.catalog.EvalArtifact).
    artifacts: list[Any] = field(default_factory=list)

    # -- shared pieces ------------------------------------------------------------------------
    def runner(self) -> "Runner":
        """The version's runner, opened once and shared by the suites of this job."""
        if self._runner is None:
            from relman.tasks import open_runner

            self._runner = open_runner(self.model.folder, self.model.fmt, self.model.task, self.device,
                                       self.threads)
        return self._runner

    def runner_for(self, ref: ModelRef) -> "Runner":
        """A runner for another version (parent, production) on the same device and threads,
        opened once per job."""
        key = str(ref.folder)
        if key not in self._others:
            from relman.tasks import open_runner

            self._others[key] = open_runner(ref.folder, ref.fmt, ref.task, self.device, self.threads)
        return self._others[key]

    def comparators(self) -> "list[Comparator]":
        """The versions this one is compared with in the same job: its parent and its model's
        production version (one entry when they are the same version), each opened on the same
        device with the same threads. A reference that cannot run here (another task, a bare
        weights file) is left out and logged, never silently timed as something else."""
        if self._comparators is None:
            found: dict[str, Comparator] = {}
            for scope, ref in (("parent", self.parent), ("production", self.production)):
                if ref is None or ref.task != self.model.task:
                    continue
                key = str(ref.folder)
                if key in found:
                    found[key].scopes.append(scope)
                    continue
                try:
                    found[key] = Comparator([scope], ref.ref, self.runner_for(ref))
                except Exception as e:  # noqa: BLE001 - any load failure: compare without it
                    if self.ctx is not None:
                        self.ctx.log("cannot compare with %s %s: %s", scope, ref.ref, e)
            self._comparators = list(found.values())
        return self._comparators

    def scratch(self) -> Path:
        """A folder for files a suite writes before the job stores them (the job's workdir)."""
        if self.ctx is not None:
            return Path(self.ctx.workdir)
        import tempfile

        return Path(tempfile.mkdtemp(prefix="relman-suite-"))

    def close(self) -> None:
        self._runner = None
        self._others.clear()
        self._comparators = None

    def eval_data(self, suite: str, *, labels: bool = False, groups: bool = False) -> Dataset:
        """The rows a data suite scores: the chosen split, the first `max_samples`, checked to fit
        the task (and to have labels / groups when the suite needs them)."""
        ds = self.dataset
        if ds is None:
            raise EvaluationError(f"suite '{suite}' needs a dataset (--dataset NAME)")
        self.runner().check_dataset(ds)
        split = self.options.get("split") or None
        if split and ds.split is not None:
            sub = ds.subset(split)
            if len(sub) == 0:
                raise EvaluationError(f"dataset '{ds.name}' has no rows in split '{split}'")
            ds = sub
        if self.max_samples:
            ds = ds.head(self.max_samples)
        if labels and not ds.has_labels:
            raise EvaluationError(f"suite '{suite}' needs labels, but dataset '{ds.name}' has none")
        if groups and not ds.has_groups:
            raise EvaluationError(f"suite '{suite}' needs a group column, but dataset '{ds.name}' has none")
        return ds

    @property
    def eval_batch_size(self) -> int:
        return int(self.options.get("eval_batch_size") or max(self.batch_sizes))

    def progress(self, fraction: float, message: str = "") -> None:
        """Progress within the current suite (the job maps it into its overall bar); also a
        cancellation point."""
        if self.progress_hook is not None:
            self.progress_hook(fraction, message)
        elif self.ctx is not None:
            self.ctx.check_cancelled()

    # -- metrics ------------------------------------------------------------------------------
    def base_context(self) -> dict[str, Any]:
        if not self._versions:
            self._versions = library_versions()
        threads = self.threads if self.threads else (self._runner.backend.threads if self._runner else None)
        ctx: dict[str, Any] = {"device": self.device, "threads": threads, "format": self.model.fmt,
                               "task": self.model.task, "libs": self._versions}
        if self.dataset is not None:
            ctx.update(dataset=self.dataset.name, dataset_sha=self.dataset.sha256,
                       split=self.options.get("split") if self.dataset.split is not None else None,
                       max_samples=self.max_samples)
        return ctx

    def metric(self, suite: str, name: str, value: float | None, *, uses_data: bool = True,
               **context: Any) -> Metric:
        ctx = self.base_context()
        if not uses_data:
            for k in ("dataset", "dataset_sha", "split", "max_samples"):
                ctx.pop(k, None)
        ctx.update(context)
        dataset_id = self.dataset.id if (uses_data and self.dataset is not None) else None
        return Metric(suite=suite, name=name, value=None if value is None else float(value), context=ctx,
                      dataset_id=dataset_id)
