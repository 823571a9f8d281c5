"""Explaining a version: check the request, reuse stored attributions, or queue an "explain" job.

Everything that can be refused without torch is refused here, before anything is queued: a
task with no explainer, a dataset of the wrong kind, an example index out of range, a gradient
method asked of a version that has no gradients (ONNX, torch-int8). The CLI and the GUI both
call these functions; neither computes attributions itself.
"""

from __future__ import annotations

from typing import Any

from relman.catalog import Catalog
from relman.errors import EvaluationError

# Formats whose stored form has no gradients here: explained by perturbation only.
NO_GRADIENT_FORMATS = ("onnx", "torch-int8")


def resolve_method(fmt: str, method: str, ref: str) -> str:
    from relman.evaluate.explain import METHOD_TITLES, check_method

    check_method(method)
    if method == "auto":
        return "occlusion" if fmt in NO_GRADIENT_FORMATS else "ig"
    if method == "ig" and fmt in NO_GRADIENT_FORMATS:
        raise EvaluationError(f"{METHOD_TITLES['ig']} needs gradients, but {ref} is a {fmt} version (no gradients "
                              "here); explain it with --method occlusion (or shap), which needs only the forward pass")
    if method == "attention" and fmt == "onnx":
        raise EvaluationError(f"{METHOD_TITLES['attention']} reads a PyTorch transformer's attention weights, but "
                              f"{ref} is an ONNX graph; explain it with --method occlusion (or shap, lime)")
    return method


def plan_explain(catalog: Catalog, ref: str, dataset: str | int, *, examples: int | None = None,
                 example: int | None = None, method: str = "auto", seed: int = 0, ig_steps: int = 32,
                 shap_samples: int = 64, threads: int | None = None) -> dict[str, Any]:
    """The explain job's parameters (checked; the examples chosen), nothing queued."""
    from relman.data.stored import get_dataset
    from relman.evaluate.explain import DEFAULT_EXAMPLES, check_task
    from relman.evaluate.explain.selection import select_examples
    from relman.evaluate.job import check_dataset_row

    if examples is not None and example is not None:
        raise EvaluationError("give --examples N or --example I, not both")
    v = catalog.resolve(ref)
    check_task(v.task, v.ref)
    row = get_dataset(catalog, dataset)
    check_dataset_row(v.task, [], row, v.ref)
    if examples is not None and int(examples) < 1:
        raise EvaluationError(f"--examples must be at least 1, got {examples}")
    n_rows = int(row["n_rows"])
    indices = select_examples(n_rows, examples or DEFAULT_EXAMPLES, seed, example)
    params: dict[str, Any] = {"version_id": v.id, "dataset": row["id"], "indices": indices,
                              "method": resolve_method(v.format, method, v.ref), "seed": int(seed),
                              "ig_steps": int(ig_steps), "shap_samples": int(shap_samples)}
    if threads:
        params["threads"] = int(threads)
    return params


def stored_explanation(catalog: Catalog, params: dict[str, Any]) -> dict[str, Any] | None:
    """Stored attributions that answer `params` (same version, dataset, method; every asked
    example; the whole dataset, not a split), restricted to the asked examples; else None."""
    from relman.evaluate.explain import artifact as art

    for row in reversed(catalog.evaluation_artifacts(params["version_id"], "attributions")):
        meta = row["meta"]
        if (row["method"] != params["method"] or row["dataset_id"] != params["dataset"]
                or meta.get("split") is not None
                or not set(params["indices"]) <= set(meta.get("indices") or [])):
            continue
        return art.select(art.load(catalog, row), params["indices"])
    return None


def queue_explain(catalog: Catalog, params: dict[str, Any], *, device: str = "auto",
                  actor: str | None = None) -> int:
    from relman.jobs.queue import enqueue

    return enqueue(catalog, "explain", params, device=device, actor=actor)


def randomisation_warning(catalog: Catalog, version_id: int) -> str | None:
    """Why the version's explanations are untrustworthy (its newest model-randomisation check
    failed: they barely depend on its weights), or None. Reads stored metrics only."""
    rows = [m for m in catalog.metrics(version_id) if m["name"] == "explain_randomisation_agreement"]
    if not rows:
        return None
    ctx = rows[-1]["context"]
    why = ctx.get("untrustworthy")
    if not why:
        return None
    ci = ctx.get("ci95")
    ci_txt = f" (95% interval {ci[0]:.2f}..{ci[1]:.2f})" if isinstance(ci, list) and len(ci) == 2 else ""
    return f"untrustworthy explanations of {ctx.get('randomised') or 'this version'}: {why}{ci_txt}"


def stored_methods(catalog: Catalog, version_id: int) -> list[str]:
    """The attribution methods a version has stored maps of (oldest first)."""
    seen: list[str] = []
    for r in catalog.evaluation_artifacts(version_id, "attributions"):
        if r["method"] not in seen:
            seen.append(r["method"])
    return seen


def load_explain_view(catalog_root: Any, version_id: int, against_id: int | None = None,
                      method: str | None = None) -> dict[str, Any]:
    """Everything the Explain view shows, read with a connection of its own (the view calls
    this on a worker thread, so reading and hash-checking attribution blobs never blocks the
    GUI): the pair, the randomisation warning and the stored methods."""
    from relman.catalog import open_catalog

    with open_catalog(catalog_root, create=False) as cat:
        return {"pair": explanation_pair(cat, version_id, against_id, method),
                "warning": randomisation_warning(cat, version_id), "methods": stored_methods(cat, version_id)}


def latest_attributions(catalog: Catalog, version_id: int) -> dict[str, Any] | None:
    """The newest stored attributions document of a version (for the GUI and the card)."""
    from relman.evaluate.explain import artifact as art

    rows = catalog.evaluation_artifacts(version_id, "attributions")
    return art.load(catalog, rows[-1]) if rows else None


def explanation_pair(catalog: Catalog, version_id: int, against_id: int | None = None,
                     method: str | None = None) -> dict[str, Any]:
    """What the Explain view shows: the newest stored attributions of a version, those of the
    version it is compared with (default: its first parent) on the same examples with the same
    method (from the same job when there is one), the per-example comparison and the flip list
    (changed predictions, most divergent attributions first). `method` picks the newest stored
    map of that method (e.g. attention rollout beside IG). Reads stored documents only."""
    from relman.evaluate.explain import artifact as art
    from relman.evaluate.explain.compare import compare_examples, flip_list

    out: dict[str, Any] = {"version": None, "against": None, "rows": [], "flips": []}
    rows = [r for r in catalog.evaluation_artifacts(version_id, "attributions") if not method or r["method"] == method]
    if not rows:
        return out
    vrow = rows[-1]
    vdoc = art.load(catalog, vrow)
    out["version"] = vdoc
    if against_id is None:
        parents = catalog.parents(version_id)
        against_id = parents[0]["parent_id"] if parents else None
    if against_id is None:
        return out
    wanted = set(vdoc["indices"])
    candidates = [r for r in catalog.evaluation_artifacts(against_id, "attributions")
                  if r["method"] == vrow["method"] and r["dataset_id"] == vrow["dataset_id"]
                  and r["meta"].get("split") == vrow["meta"].get("split")
                  and wanted & set(r["meta"].get("indices") or [])]
    if not candidates:
        return out
    same_job = [r for r in candidates if vrow["job_id"] is not None and r["job_id"] == vrow["job_id"]]
    adoc = art.load(catalog, (same_job or candidates)[-1])
    out["against"] = adoc
    try:
        out["rows"] = compare_examples(vdoc["examples"], adoc["examples"])
    except ValueError:
        out["rows"] = []
    out["flips"] = flip_list(out["rows"])
    return out


def queue_explain_pair(catalog: Catalog, ref: str, against: str | None, dataset: str | int, *,
                       examples: int | None = None, method: str = "auto", seed: int = 0, device: str = "auto",
                       actor: str | None = None) -> list[int]:
    """Queue explain jobs for a version and the version it is compared with, on the same
    examples with the same method (occlusion for both when either has no gradients); one
    transaction, so a refusal queues nothing. Returns the job ids."""
    from relman.jobs.queue import enqueue

    refs = [ref] + ([against] if against else [])
    versions = [catalog.resolve(r) for r in refs]
    if method == "auto":
        method = "occlusion" if any(v.format in NO_GRADIENT_FORMATS for v in versions) else "ig"
    plans = [plan_explain(catalog, v.ref, dataset, examples=examples, method=method, seed=seed) for v in versions]
    with catalog.transaction():
        return [enqueue(catalog, "explain", p, device=device, actor=actor) for p in plans]
