"""The "compress" job kind: one recipe turns parent version(s) into one child version.

`run(params, ctx)` materialises the parents in the job's scratch folder, runs the recipe
(which checks for cancellation between its steps), then commits the child — blobs, version
row, artifacts, lineage with the recipe as relation, the recipe record (every parameter and
the library versions), the recipe's own metrics, the audit event and the job's result — in
the one transaction of `Catalog.add_version`. Anything that goes wrong before that commit
leaves no version; blobs staged under the job's owner tag are removed again (by
`add_version` on an exception, by the worker or the runner when the process died).

After the commit the child's evaluation against its parent (quality when a dataset is
attached, fidelity, size, latency) is queued as its own job, so a slow evaluation never holds
the version hostage and the trade-off of every recipe ends up stored and comparable.

Job params::

    {"recipe": "ort-int8", "params": {...}, "parent_version_ids": [12],
     "model": "minilm" (default: the first parent's), "version": "1.0.1" (default: next patch),
     "dataset": "sst2" (optional), "evaluate": true}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relman.context import hold_here
from relman.compress.registry import ModelSource, Recipe, RecipeOutput, get_recipe
from relman.errors import JobCancelled, JobError, RecipeError

if TYPE_CHECKING:
    from relman.catalog import VersionInfo
    from relman.context import CatalogWork

LIBRARIES = ("torch", "transformers", "onnxruntime", "onnx", "numpy", "safetensors", "gguf")
_SKIP_SUFFIXES = (".partial",)


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries a recipe's result depends on (from package
    metadata, so nothing heavy is imported just to record them)."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    from relman import __version__

    out["relman"] = __version__
    return out


def parse_params(params: dict[str, Any]) -> tuple[Recipe, list[int], dict[str, Any]]:
    """Check a compress job's params; returns (recipe, parent ids, resolved recipe params)."""
    if not isinstance(params, dict) or "recipe" not in params:
        raise JobError("a compress job needs a 'recipe' parameter")
    recipe = get_recipe(str(params["recipe"]))
    ids = params.get("parent_version_ids")
    if isinstance(ids, int):
        ids = [ids]
    if not ids or not all(isinstance(i, int) for i in ids):
        raise JobError("a compress job needs 'parent_version_ids', a list of version ids")
    raw = params.get("params") or {}
    if not isinstance(raw, dict):
        raise RecipeError("recipe parameters must be a mapping of name to value")
    resolved = recipe.resolve_params(raw)
    dataset = params.get("dataset")
    if dataset and "dataset" in resolved and not resolved["dataset"]:
        resolved["dataset"] = dataset
    return recipe, list(ids), resolved


def collect_files(folder: Path) -> dict[str, Path]:
    """Every file the recipe wrote (relative path → file), temp names excluded."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RecipeError(f"the recipe produced no output folder ({folder})")
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*"))
             if p.is_file() and not p.name.endswith(_SKIP_SUFFIXES)}
    if not files:
        raise RecipeError("the recipe produced no files")
    return files


def inherited_privacy(parents: list["VersionInfo"], resolved: dict[str, Any], output: RecipeOutput) -> dict | None:
    """A DP guarantee survives post-processing: a one-parent recipe that reads no dataset
    (quantisation, export, pruning without recovery) keeps its parent's ledger. Anything that
    touches data (a `dataset` parameter: training, distillation, calibration) does not."""
    if "privacy" in output.meta or len(parents) != 1 or resolved.get("dataset"):
        return None
    ledger = parents[0].meta.get("privacy")
    if not ledger or ledger.get("epsilon") is None:
        return None
    return {**ledger, "inherited_from": parents[0].ref}


def commit_child(ctx: "CatalogWork", recipe: Recipe, parents: list["VersionInfo"], resolved: dict[str, Any],
                 output: RecipeOutput, *, model: str | None, version: str | None, dataset: str | None,
                 event_kind: str = "compress") -> "VersionInfo":
    """Store the recipe's output as the child version, all in one transaction."""
    files = collect_files(output.folder)
    first = parents[0]
    weights = output.meta.get("parent_weights")
    if weights is None or len(weights) != len(parents):
        weights = [None] * len(parents)
    record = {"name": recipe.name, "params": resolved, "libraries": library_versions(),
              "parents": [p.ref for p in parents], "dataset": dataset or None}
    meta: dict[str, Any] = {k: first.meta[k] for k in ("labels", "model_type") if k in first.meta}
    meta.update(output.meta)
    metrics = list(output.metrics)
    inherited = inherited_privacy(parents, resolved, output)
    if inherited is not None:
        from relman.catalog import Metric

        meta["privacy"] = inherited
        metrics.append(Metric("privacy", "privacy_epsilon", float(inherited["epsilon"]), inherited))
    lineage = [(p.id, w) for p, w in zip(parents, weights)]
    lineage += [(i, None) for i in output.extra_parents if i not in {p.id for p in parents}]
    return ctx.catalog.add_version(
        model or first.model, files, format=output.format, version=version, task=output.task or first.task,
        architecture=first.architecture, params=output.params, dtype=output.dtype, recipe=record, meta=meta,
        parents=lineage, relation=recipe.name, metrics=metrics,
        actor=ctx.actor, owner=ctx.owner, event_kind=event_kind, job_id=ctx.job_id)


def committed_by_job(ctx: "CatalogWork", recipe: Recipe, parents: list["VersionInfo"],
                     resolved: dict[str, Any]) -> "VersionInfo | None":
    """The child an earlier attempt of this job already committed for this recipe, parents and
    parameters (found through the audit events, which name the job), so a retry keeps it
    instead of storing a duplicate."""
    if ctx.job_id is None:
        return None
    import json

    from relman.catalog.events import canonical

    rows = ctx.catalog.conn.execute(
        "SELECT model, version, payload FROM events WHERE kind = 'compress' AND json_extract(payload, '$.job') = ?"
        " ORDER BY seq", [ctx.job_id]).fetchall()
    want = canonical(resolved)
    refs = [p.ref for p in parents]
    for model, version, payload in rows:
        rec = json.loads(payload).get("recipe") or {}
        if rec.get("name") == recipe.name and canonical(rec.get("params")) == want and rec.get("parents") == refs:
            try:
                return ctx.catalog.resolve(f"{model}@{version}")
            except Exception:  # deleted since
                return None
    return None


def apply_recipe(ctx: "CatalogWork", recipe: Recipe, parents: list["VersionInfo"], resolved: dict[str, Any],
                 *, subdir: str = "") -> RecipeOutput:
    """Materialise the parents and run the recipe in a scratch folder (nothing committed)."""
    base = ctx.workdir / subdir if subdir else ctx.workdir
    from relman.modelio.loading import materialize_version

    sources = []
    for v in parents:
        sources.append(ModelSource(v, materialize_version(ctx.catalog, v.id, ctx.workdir / "parents")))
        ctx.check_cancelled()
    saved = ctx.workdir
    ctx.workdir = base  # recipes write under ctx.workdir; each candidate of a search gets its own
    base.mkdir(parents=True, exist_ok=True)
    try:
        output = recipe.function()(sources, resolved, ctx)
    finally:
        ctx.workdir = saved
    if not isinstance(output, RecipeOutput):
        raise RecipeError(f"recipe '{recipe.name}' returned {type(output).__name__}, not a RecipeOutput")
    return output


def _plan_with_explain(ctx: "CatalogWork", child: "VersionInfo", parent: "VersionInfo", dataset: str | None,
                       suites: list[str]) -> list[dict[str, Any]]:
    """The evaluation plan, with the explain suite (attribution agreement with the parent, in a
    time budget) when the task has an explainer and the dataset suits it; without it otherwise."""
    from relman.errors import RelmanError
    from relman.evaluate.explain import AUTO_OPTIONS, EXPLAINERS
    from relman.evaluate.plan import plan_evaluation

    if dataset and child.task == parent.task and child.task in EXPLAINERS:
        try:
            return plan_evaluation(ctx.catalog, [child.ref], dataset=dataset, parent=parent.ref,
                                   suites=[*suites, "explain"], options=dict(AUTO_OPTIONS))
        except RelmanError as e:
            ctx.log("explain not added to the evaluation: %s", e)
    return plan_evaluation(ctx.catalog, [child.ref], dataset=dataset, parent=parent.ref, suites=suites)


def queue_child_evaluation(ctx: "CatalogWork", child: "VersionInfo", parent: "VersionInfo",
                           dataset: str | None) -> tuple[int | None, str]:
    """Queue the child's evaluation against its parent (the evaluation's default suites for
    the task: quality when a dataset is attached, fidelity, size, latency) as a job spawned by
    this one, so `--wait` on the compression also waits for it. (job id or None, note)."""
    from relman.data.stored import get_dataset
    from relman.evaluate import registry
    from relman.tasks.specs import find_task

    note = "queued"
    spec = find_task(child.task)
    if dataset and spec is not None and get_dataset(ctx.catalog, dataset)["kind"] not in spec.data_kinds:
        # e.g. an LM instruction-tuned on sft rows: the training rows are no input its evaluation reads
        note = f"queued without dataset '{dataset}' (a {child.task} evaluation does not read its rows)"
        dataset = None
    suites = list(registry.default_suites(child.task, bool(dataset)))
    if dataset and child.task == parent.task:  # fidelity reads the dataset's inputs through both models
        suites.append("fidelity")
    if dataset and child.meta.get("postprocessor"):  # a fairness mitigation: its gap before / after
        suites.append("fairness")
    if child.format == "gguf":  # no GGUF runtime in relman yet: what reads the file only
        from relman.modelio.gguf_file import evaluable_suites

        suites = [s for s in suites if s in evaluable_suites()]
    plans = _plan_with_explain(ctx, child, parent, dataset, suites)
    device = ctx.device if ctx.device.startswith("cuda") else "cpu"
    if child.format == "torch-int8":  # PyTorch's dynamic INT8 kernels are CPU-only
        device = "cpu"
    job_id = ctx.queue_job("evaluate", plans[0], device=device)
    return int(job_id), note


def _adopt(ctx: "CatalogWork", child: "VersionInfo", parents: list["VersionInfo"], params: dict[str, Any]
           ) -> dict[str, Any]:
    """A retry of a job whose earlier attempt committed its child but died before being marked
    succeeded: keep that child (no duplicate), and queue its evaluation unless one is queued,
    running or done already."""
    ctx.log("adopting %s, committed by an earlier attempt of this job", child.ref)
    result: dict[str, Any] = {"version_id": child.id, "ref": child.ref, "format": child.format,
                              "size_bytes": child.size_bytes, "parent_size_bytes": parents[0].size_bytes,
                              "params": child.params, "parent_params": parents[0].params, "adopted": True}
    if params.get("evaluate", True):
        live = ctx.catalog.conn.execute(
            "SELECT id FROM jobs WHERE parent_job_id = ? AND kind = 'evaluate' AND status NOT IN ('failed', 'cancelled')"
            " ORDER BY id", [ctx.job_id]).fetchall()
        if live:
            result["evaluation_job"], result["evaluation"] = int(live[0][0]), "already queued"
        else:
            try:
                result["evaluation_job"], result["evaluation"] = queue_child_evaluation(
                    ctx, child, parents[0], params.get("dataset") or None)
            except Exception as e:
                result["evaluation_job"], result["evaluation"] = None, f"evaluation not queued: {e}"
    ctx.progress(1.0, f"kept {child.ref} (committed by an earlier attempt)", check_cancel=False)
    return result


def run(params: dict[str, Any], ctx: "CatalogWork") -> dict[str, Any]:
    """Job kind "compress"."""
    recipe, ids, resolved = parse_params(params)
    parents = [ctx.catalog.get_version(i) for i in ids]
    committed = ctx.committed_result()
    if committed is not None:
        return _adopt(ctx, ctx.catalog.get_version(committed), parents, params)
    recipe.check_parents(parents)
    dataset = params.get("dataset") or None
    if dataset:
        from relman.data.stored import get_dataset

        get_dataset(ctx.catalog, dataset)
    ctx.log_json("compress", {"recipe": recipe.name, "params": resolved, "parents": [p.ref for p in parents],
                              "pid": os.getpid()})
    ctx.progress(0.0, f"{recipe.name}: preparing {', '.join(p.ref for p in parents)}")
    output = apply_recipe(ctx, recipe, parents, resolved)
    hold_here("compress.before-commit", ctx)  # tests cancel / kill here (no-op otherwise)
    ctx.check_cancelled()  # last point where stopping leaves nothing behind
    ctx.progress(0.95, "storing the child version")
    child = commit_child(ctx, recipe, parents, resolved, output, model=params.get("model"),
                         version=params.get("version"), dataset=dataset)
    hold_here("compress.after-commit", ctx)  # tests kill here: committed, not yet marked succeeded
    result: dict[str, Any] = {"version_id": child.id, "ref": child.ref, "format": child.format,
                              "size_bytes": child.size_bytes, "parent_size_bytes": parents[0].size_bytes,
                              "params": child.params, "parent_params": parents[0].params}
    warning = output.meta.get("warning")  # e.g. finetune's "did not converge": said, not hidden
    if warning:
        result["warning"] = str(warning)
    if params.get("evaluate", True):
        try:
            eval_job, note = queue_child_evaluation(ctx, child, parents[0], dataset)
        except Exception as e:  # the child is stored; a failed queueing must not hide that
            eval_job, note = None, f"evaluation not queued: {e}"
        result["evaluation_job"] = eval_job
        result["evaluation"] = note
    try:
        ctx.progress(1.0, f"stored {child.ref}" + (f" — WARNING: {warning}" if warning else ""))
    except JobCancelled:  # asked too late: the child is committed, the job's outcome is that
        ctx.log("cancel requested after %s was stored; keeping it", child.ref)
    return result
