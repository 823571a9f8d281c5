"""The "evaluate" job: run metric suites on one version, store every metric at once.

params:
  version_id         the version to evaluate (required)
  dataset            registered dataset name or id (required by quality / fidelity /
                     robustness / fairness; optional for memory / latency, which otherwise use
                     synthetic inputs of the requested shapes; unused by size)
  suites             list of suite names (default: size, latency [+ quality with a dataset])
  device             overrides the job's device (normally the runner's choice, ctx.device)
  batch_sizes        latency is measured at each; memory uses the first (default [1, 8])
  seq_lens           latency is measured at each for text models (default [128])
  parent_version_id  for fidelity (default: the version's first parent)
  threads            intra-op threads for torch / onnxruntime (default: the worker's budget)
  max_samples        evaluate on at most this many rows (the first ones, same for every version)
  options            suite options by name (see relman.evaluate.registry)

One job = one version = one fresh worker process, so latency and memory of different versions
never share a process. Suites run in a fixed order; progress is reported per suite and the
cancel flag checked between (and inside) suites. All metrics land in ONE
`catalog.add_metrics` call at the end: a failed or cancelled job stores nothing.
"""

from __future__ import annotations

import os
from typing import Any

from relman.catalog import Metric
from relman.errors import EvaluationError
from relman.evaluate import registry
from relman.tasks.specs import find_task

DEFAULT_BATCH_SIZES = [1, 8]
DEFAULT_SEQ_LENS = [128]


def _int_list(value: Any, name: str, default: list[int]) -> list[int]:
    if value in (None, "", []):
        return list(default)
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    try:
        out = [int(v) for v in items]
    except (TypeError, ValueError):
        raise EvaluationError(f"'{name}' must be whole numbers, got {value!r}") from None
    if any(v < 1 for v in out):
        raise EvaluationError(f"'{name}' must be at least 1, got {value!r}")
    return out


def _threads(params: dict[str, Any]) -> int | None:
    raw = params.get("threads") or os.environ.get("RELMAN_TORCH_THREADS") or os.environ.get("OMP_NUM_THREADS")
    try:
        return int(raw) if raw else None
    except ValueError:
        raise EvaluationError(f"'threads' must be a whole number, got {raw!r}") from None


def check_request(task: str | None, suites: list[str], has_dataset: bool, ref: str) -> None:
    """Refuse, before any work, a suite that cannot run on this version / without data."""
    for name in suites:
        s = registry.get_suite(name)
        if task not in s.tasks:
            raise EvaluationError(f"suite '{name}' does not apply to {ref} (task {task or 'unknown'}; it "
                                  f"handles {', '.join(s.tasks)})")
        if s.dataset == "required" and not has_dataset:
            raise EvaluationError(f"suite '{name}' needs a dataset (--dataset NAME)")


def check_dataset_row(task: str | None, suites: list[str], row: dict[str, Any], ref: str) -> None:
    """Refuse, from the dataset's catalog row alone (no loading), data that cannot serve the
    suites on this version: the wrong kind for the task, no labels, no groups."""
    spec = find_task(task)
    kinds = spec.data_kinds if spec is not None else ()
    name = row["name"]
    if kinds and row["kind"] not in kinds:
        raise EvaluationError(f"dataset '{name}' holds {row['kind']} data, but {ref} is a {task} model and needs "
                              f"{' or '.join(kinds)} data")
    labels = row.get("labels") or []
    if isinstance(labels, str):
        import json

        labels = json.loads(labels or "[]")
    for s in suites:
        suite = registry.get_suite(s)
        if suite.needs_labels_for(task) and not labels:
            raise EvaluationError(f"suite '{s}' needs labels, but dataset '{name}' has none")
        meta = row.get("meta") or {}
        if suite.needs_groups and isinstance(meta, dict) and not meta.get("groups"):
            raise EvaluationError(f"suite '{s}' needs a group column, but dataset '{name}' has none")


def run(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
    from relman.evaluate.env import ModelRef, SuiteEnv
    from relman.modelio.loading import materialize_version
    from relman.tasks.backends import resolve_device

    catalog = ctx.catalog
    if "version_id" not in params:
        raise EvaluationError("an evaluate job needs 'version_id'")
    version = catalog.get_version(int(params["version_id"]))
    dataset_ref = params.get("dataset")
    suites = registry.ordered(params.get("suites") or registry.default_suites(version.task, dataset_ref is not None))
    check_request(version.task, suites, dataset_ref is not None, version.ref)
    options = registry.resolve_options(suites, params.get("options"))
    device = resolve_device(params.get("device") or ctx.device or "auto")
    max_samples = int(params["max_samples"]) if params.get("max_samples") else None

    parent_ref = None
    if "fidelity" in suites:
        pid = params.get("parent_version_id")
        if pid is None:
            parents = catalog.parents(version.id)
            if not parents:
                raise EvaluationError(f"fidelity compares {version.ref} with its parent, but it has none "
                                      "(name one with --parent)")
            pid = parents[0]["parent_id"]
        pinfo = catalog.get_version(int(pid))
        parent_ref = ModelRef(pinfo, materialize_version(catalog, pinfo.id, ctx.workdir), pinfo.format,
                              pinfo.task or "")

    ctx.progress(0.0, "loading dataset" if dataset_ref is not None else "preparing")
    dataset = None
    if dataset_ref is not None:
        from relman.data import load_dataset

        dataset = load_dataset(catalog, dataset_ref)
    folder = materialize_version(catalog, version.id, ctx.workdir)
    env = SuiteEnv(model=ModelRef(version, folder, version.format, version.task or ""), device=device,
                   threads=_threads(params), options=options,
                   batch_sizes=_int_list(params.get("batch_sizes"), "batch_sizes", DEFAULT_BATCH_SIZES),
                   seq_lens=_int_list(params.get("seq_lens"), "seq_lens", DEFAULT_SEQ_LENS),
                   dataset=dataset, parent=parent_ref, max_samples=max_samples, ctx=ctx, catalog=catalog)
    ctx.log_json("evaluate", {"version": version.ref, "suites": suites, "device": device, "threads": env.threads,
                              "dataset": dataset.name if dataset else None, "options": options})
    metrics: list[Metric] = []
    n = len(suites)
    for i, name in enumerate(suites):
        ctx.check_cancelled()
        env.progress_hook = lambda f, msg, i=i: ctx.progress(0.02 + 0.96 * (i + min(1.0, f)) / n, msg)
        ctx.progress(0.02 + 0.96 * i / n, f"{name} ({i + 1}/{n})")
        got = registry.get_suite(name).function()(env)
        ctx.log("%s: %d metrics", name, len(got))
        metrics.extend(got)
    env.close()
    ctx.hold_point("evaluate.before-commit")  # tests cancel / kill here (no-op otherwise)
    ctx.check_cancelled()
    stored = catalog.add_metrics(version.id, metrics, job_id=ctx.job_id, actor=ctx.actor)
    ctx.progress(1.0, f"stored {stored} metrics")
    return {"version_id": version.id, "metrics": stored, "suites": suites,
            "dataset": dataset.name if dataset else None, "device": device}
