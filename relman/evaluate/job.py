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

from relman.context import hold_here
from relman.catalog import Metric
from relman.errors import EvaluationError
from relman.evaluate import registry
from relman.tasks.specs import find_task

DEFAULT_BATCH_SIZES = [1, 8]
DEFAULT_SEQ_LENS = [128]


def _int_list(value: Any, name: str, default: list[int]) -> list[int]:
    if value in (None, "", []):
        return list(default)
    from relman.typed_params import _whole_number

    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    try:
        out = [_whole_number(v) for v in items]
    except (TypeError, ValueError, OverflowError):
        raise EvaluationError(f"'{name}' must be whole numbers, got {value!r}") from None
    if any(v < 1 for v in out):
        raise EvaluationError(f"'{name}' must be at least 1, got {value!r}")
    limit = MAX_LIST_VALUE.get(name)
    if limit is not None and any(v > limit for v in out):
        raise EvaluationError(f"'{name}' must be at most {limit}, got {value!r}")
    return out


# upper bounds checked when a job is queued (the model's own position limit is checked too)
MAX_LIST_VALUE = {"batch_sizes": 4096, "seq_lens": 1_000_000}


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
        if suite.data_kinds and row["kind"] not in suite.data_kinds:
            raise EvaluationError(f"suite '{s}' reads {' or '.join(suite.data_kinds)} items, but dataset '{name}' "
                                  f"holds {row['kind']} data")
        if suite.needs_labels_for(task) and not labels:
            raise EvaluationError(f"suite '{s}' needs labels, but dataset '{name}' has none")
        meta = row.get("meta") or {}
        if suite.needs_groups and isinstance(meta, dict) and not meta.get("groups"):
            raise EvaluationError(f"suite '{s}' needs a group column, but dataset '{name}' has none")


COMPARED_SUITES = ("latency", "quality", "fidelity", "explain", "mc", "generate")  # explain compares with a parent


def production_version(catalog: Any, model: str, exclude: int | None = None) -> Any:
    """The model's current production version (the newest in that phase), if any."""
    prod = [v for v in catalog.versions(model) if v.phase == "production" and v.id != exclude]
    return max(prod, key=lambda v: v.created_at) if prod else None


def _references(catalog: Any, version: Any, suites: list[str], params: dict[str, Any], ctx: Any) -> tuple[Any, Any]:
    """The parent (for fidelity, paired latency and quality deltas) and the production version
    (paired latency, quality deltas) laid out on disk, when the suites use them."""
    from relman.evaluate.env import ModelRef
    from relman.modelio.loading import materialize_version

    if not any(s in COMPARED_SUITES for s in suites):
        return None, None
    pid = params.get("parent_version_id")
    if pid is None:
        parents = catalog.parents(version.id)
        if not parents and "fidelity" in suites:
            raise EvaluationError(f"fidelity compares {version.ref} with its parent, but it has none "
                                  "(name one with --parent)")
        pid = parents[0]["parent_id"] if parents else None

    def ref(info: Any) -> Any:
        return ModelRef(info, materialize_version(catalog, info.id, ctx.workdir), info.format, info.task or "")

    parent_ref = ref(catalog.get_version(int(pid))) if pid is not None else None
    prod = production_version(catalog, version.model, exclude=version.id)
    production_ref = None
    if prod is not None:
        production_ref = parent_ref if parent_ref is not None and parent_ref.info.id == prod.id else ref(prod)
    return parent_ref, production_ref


def conditions(catalog: Any, ctx: Any) -> dict[str, Any]:
    """What else was happening: the 1-minute load average and the other running jobs."""
    try:
        load = float(os.getloadavg()[0])
    except (OSError, AttributeError):  # Windows
        load = None
    out: dict[str, Any] = {"load_avg_1m": load, "cpu_count": os.cpu_count()}
    if getattr(ctx, "job_id", None) is not None:
        out["other_jobs"] = catalog.running_job_ids(exclude=ctx.job_id)
    return out


def with_conditions(metrics: list[Metric], before: dict[str, Any], after: dict[str, Any]) -> list[Metric]:
    """Attach the conditions around a suite to its metrics (a suite's own, finer record — the
    latency suite watches every round — wins). `under_load`: more runnable processes than cores
    (1-minute load average above the core count); `beside_jobs`: other jobs were running."""
    loads = [x for x in (before.get("load_avg_1m"), after.get("load_avg_1m")) if x is not None]
    merged: dict[str, Any] = {"load_avg_1m": max(loads) if loads else None, "cpu_count": before.get("cpu_count")}
    if "other_jobs" in before or "other_jobs" in after:
        merged["other_jobs"] = sorted(set(before.get("other_jobs", [])) | set(after.get("other_jobs", [])))
    out = []
    for m in metrics:
        ctx = dict(merged)
        ctx.update(m.context)
        if "other_jobs" in ctx and "other_jobs" in merged:
            ctx["other_jobs"] = sorted(set(ctx["other_jobs"]) | set(merged["other_jobs"]))
        load, cores = ctx.get("load_avg_1m"), ctx.get("cpu_count") or 1
        ctx["under_load"] = bool(load is not None and load > cores)
        ctx["beside_jobs"] = bool(ctx.get("other_jobs"))
        out.append(Metric(m.suite, m.name, m.value, ctx, m.dataset_id))
    return out


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

    parent_ref, production_ref = _references(catalog, version, suites, params, ctx)

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
                   dataset=dataset, parent=parent_ref, production=production_ref, max_samples=max_samples,
                   ctx=ctx, catalog=catalog)
    ctx.log_json("evaluate", {"version": version.ref, "suites": suites, "device": device, "threads": env.threads,
                              "dataset": dataset.name if dataset else None, "options": options})
    metrics: list[Metric] = []
    n = len(suites)
    for i, name in enumerate(suites):
        ctx.check_cancelled()
        env.progress_hook = lambda f, msg, i=i: ctx.progress(0.02 + 0.96 * (i + min(1.0, f)) / n, msg)
        ctx.progress(0.02 + 0.96 * i / n, f"{name} ({i + 1}/{n})")
        before = conditions(catalog, ctx)
        got = registry.get_suite(name).function()(env)
        got = with_conditions(got, before, conditions(catalog, ctx))
        ctx.log("%s: %d metrics", name, len(got))
        metrics.extend(got)
    env.close()
    hold_here("evaluate.before-commit", ctx)  # tests cancel / kill here (no-op otherwise)
    ctx.check_cancelled()
    stored = catalog.add_evaluation(version.id, metrics, env.artifacts, job_id=ctx.job_id, actor=ctx.actor,
                                    owner=ctx.owner)
    ctx.progress(1.0, f"stored {stored} metrics")
    return {"version_id": version.id, "metrics": stored, "suites": suites,
            "dataset": dataset.name if dataset else None, "device": device}
