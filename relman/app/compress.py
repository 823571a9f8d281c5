"""Queueing compressions and accuracy-aware searches (GUI and CLI call these).

Everything that can be refused without torch is refused here, before a job row exists: an
unknown recipe, unknown or ill-typed parameters, a parent whose format or task the recipe does
not take, a missing dataset, a bad child model name or an existing child version. The worker
re-checks the same things (the catalog may change in between), so the job is safe either way.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from relman.catalog import Catalog, VersionInfo
from relman.errors import DuplicateVersion, RecipeError

OBJECTIVES = ("latency", "size")


def resolve_refs(catalog: Catalog, ref_or_refs: str | int | Sequence[str | int]) -> list[VersionInfo]:
    """`model@1.0.0`, a comma-separated list of refs, a list of refs, or version ids."""
    if isinstance(ref_or_refs, (str, int)):
        items: list[str | int] = [r.strip() for r in ref_or_refs.split(",")] if isinstance(ref_or_refs, str) \
            else [ref_or_refs]
    else:
        items = list(ref_or_refs)
    items = [i for i in items if i != ""]
    if not items:
        raise RecipeError("name at least one parent version (MODEL@VERSION)")
    out = [catalog.get_version(i) if isinstance(i, int) else catalog.resolve(i) for i in items]
    if len({v.id for v in out}) != len(out):
        raise RecipeError(f"the same parent is named twice ({', '.join(v.ref for v in out)})")
    return out


def _check_child(catalog: Catalog, model: str | None, version: str | None) -> None:
    from relman.catalog import semver

    if model is not None:  # the catalog's own name rule, checked now, not in the worker after its run
        from relman.names import check_name

        check_name(model, "model name")
    if version is not None:
        semver.parse(version)
        if model is not None:
            row = catalog.conn.execute(
                "SELECT 1 FROM versions v JOIN models m ON m.id = v.model_id WHERE m.name = ? AND v.version = ?",
                [model, version]).fetchone()
            if row:
                raise DuplicateVersion(f"model '{model}' already has version {version}; choose another --version "
                                       "or leave it out to bump automatically")


def _dataset_kind(catalog: Catalog, dataset: str | int | None) -> str | None:
    if not dataset:
        return None
    from relman.app.datasets import get_dataset

    return str(get_dataset(catalog, dataset).get("kind") or "") or None


def _check_dataset(catalog: Catalog, dataset: str | int | None) -> None:
    if dataset:
        from relman.app.datasets import get_dataset

        get_dataset(catalog, dataset)


def plan_compression(catalog: Catalog, ref_or_refs: str | int | Sequence[str | int], recipe: str,
                     params: Mapping[str, Any] | None = None, *, dataset: str | None = None,
                     model: str | None = None, version: str | None = None,
                     evaluate: bool = True) -> dict[str, Any]:
    """The checked parameters of a "compress" job, without queueing it."""
    from relman.compress.registry import get_recipe

    r = get_recipe(recipe)
    parents = resolve_refs(catalog, ref_or_refs)
    r.check_parents(parents)
    resolved = r.resolve_params(dict(params or {}))
    _check_dataset(catalog, dataset or resolved.get("dataset") or None)
    if r.needs_groups:
        from relman.app.datasets import get_dataset

        name = resolved.get("dataset") or dataset or None
        problem = r.groups_refusal(name, get_dataset(catalog, name)["columns"] if name else None)
        if problem:
            raise RecipeError(problem)
    _check_child(catalog, model if model is not None else (parents[0].model if version else None), version)
    return {"recipe": r.name, "params": resolved, "parent_version_ids": [p.id for p in parents],
            "model": model, "version": version, "dataset": dataset, "evaluate": bool(evaluate)}


def queue_compression(catalog: Catalog, ref_or_refs: str | int | Sequence[str | int], recipe: str,
                      params: Mapping[str, Any] | None = None, device: str = "auto", dataset: str | None = None,
                      *, model: str | None = None, version: str | None = None, evaluate: bool = True,
                      actor: str | None = None, parent_job_id: int | None = None) -> int:
    """Check, then queue one "compress" job; returns its id. `params` may hold strings from
    the CLI/GUI (`{"mode": "static", "per_channel": "true"}`); they are parsed and checked
    against the recipe's typed parameters first."""
    from relman.jobs.queue import enqueue

    job_params = plan_compression(catalog, ref_or_refs, recipe, params, dataset=dataset, model=model,
                                  version=version, evaluate=evaluate)
    _check_room(catalog, "compress", job_params, f"{recipe} of {ref_or_refs}")
    return enqueue(catalog, "compress", job_params, device=device, actor=actor, parent_job_id=parent_job_id)


def queue_optimization(catalog: Catalog, ref: str, *, max_drop: float = 0.01, objective: str = "latency",
                       dataset: str | None = None, device: str = "auto", model: str | None = None,
                       recipes: Sequence[str] | None = None, max_candidates: int | None = None,
                       latency_budget_s: float = 2.0, actor: str | None = None,
                       max_ppl_increase: float | None = None) -> int:
    """Check, then queue one "optimize" job (accuracy-aware search); returns its id.

    `max_ppl_increase` (a fraction: 0.03 = 3 %) is the language-model budget: the relative
    perplexity increase on a text dataset, which the search stores as its `max_drop`."""
    from relman.compress.optimize import is_lm_search, plan_candidates
    from relman.jobs.queue import enqueue

    if objective not in OBJECTIVES:
        raise RecipeError(f"objective must be one of {', '.join(OBJECTIVES)}, got '{objective}'")
    try:
        max_drop = float(max_drop)
    except (TypeError, ValueError):
        raise RecipeError(f"--max-drop expects a number, got '{max_drop}'") from None
    if not 0.0 <= max_drop < 1.0:
        raise RecipeError(f"--max-drop is a fraction in [0, 1) (0.01 = one point of accuracy), got {max_drop}")
    if not 0.05 <= float(latency_budget_s) <= 600:
        raise RecipeError(f"--latency-budget is seconds per measurement in [0.05, 600], got {latency_budget_s}")
    parent = catalog.resolve(ref)
    _check_dataset(catalog, dataset)
    _check_child(catalog, model, None)
    kind = _dataset_kind(catalog, dataset)
    lm = is_lm_search(parent)
    if max_ppl_increase is not None:
        if not lm:
            raise RecipeError(f"--max-ppl-increase is a language-model budget; {parent.ref} is "
                              f"'{parent.task or 'unknown'}' (use --max-drop)")
        if kind not in ("lm", "text"):
            raise RecipeError("--max-ppl-increase needs a text dataset to measure perplexity on (--dataset NAME of "
                              f"kind text or lm; '{dataset}' is {kind or 'not given'})")
        if not 0.0 <= float(max_ppl_increase) < 1.0:
            raise RecipeError(f"--max-ppl-increase is a fraction in [0, 1) (0.03 = 3 %), got {max_ppl_increase}")
        max_drop = float(max_ppl_increase)
    if lm and not dataset:
        raise RecipeError(f"optimizing the language model {parent.ref} needs --dataset: a text dataset (perplexity), "
                          "a multiple-choice one (mc accuracy) or a question-answer one (exact match)")
    candidates = plan_candidates(parent, dataset=dataset, recipes=recipes, objective=objective, device=device,
                                 dataset_kind=kind)
    if not candidates:
        raise RecipeError(f"no compression recipe applies to {parent.ref} (format '{parent.format}', task "
                          f"'{parent.task or 'unknown'}')")
    if max_candidates is not None:
        if max_candidates < 1:
            raise RecipeError(f"--max-candidates must be at least 1, got {max_candidates}")
        candidates = candidates[:max_candidates]
    job_params = {"parent_version_id": parent.id, "max_drop": max_drop, "objective": objective, "dataset": dataset,
                  "model": model, "candidates": candidates, "latency_budget_s": float(latency_budget_s),
                  **({"search": "all", "dataset_kind": kind} if lm else {})}
    _check_room(catalog, "optimize", job_params, f"optimizing {parent.ref} ({len(candidates)} candidates)")
    return enqueue(catalog, "optimize", job_params, device=device, actor=actor)


def _check_room(catalog: Catalog, kind: str, job_params: dict[str, Any], what: str) -> None:
    """Refuse a job whose output would not fit on the catalog's disk, before it is queued."""
    from relman.app.disk import check_room, estimate_job_output

    check_room(catalog, estimate_job_output(catalog, kind, job_params), what)
