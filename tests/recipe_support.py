"""Helpers shared by the recipe tests: a real imported parent laid out on disk, a recipe run
directly (no job row) with a real JobContext, and a metric read off the recipe's output."""

from __future__ import annotations

from pathlib import Path

from relman.app.models import import_model
from relman.compress.registry import ModelSource, RecipeOutput, get_recipe
from relman.jobs.context import JobContext


def source(catalog, folder: Path, name: str, tmp_path: Path) -> ModelSource:
    v = import_model(catalog, folder, name)
    return ModelSource(version=v, folder=catalog.materialize(v.id, tmp_path / f"src-{v.id}"))


def run_recipe(name: str, sources, raw: dict, catalog, ctx: JobContext | None = None) -> RecipeOutput:
    recipe = get_recipe(name)
    return recipe.function()(sources, recipe.resolve_params(raw), ctx or JobContext(catalog))


def metric(out: RecipeOutput, name: str) -> float:
    return next(m.value for m in out.metrics if m.name == name)


def compress_job(catalog, parent_id: int, recipe: str, params: dict | None = None, dataset: str | None = None):
    """Run a compression job's body here (a real JobContext, no worker process); the child version."""
    from relman.compress import job

    ctx = JobContext(catalog)
    try:
        result = job.run({"recipe": recipe, "params": params or {}, "parent_version_ids": [parent_id],
                          "dataset": dataset, "evaluate": False}, ctx)
    finally:
        ctx.cleanup()
    return catalog.get_version(result["version_id"])


def evaluate_job(catalog, version_id: int, **params):
    """Run an evaluation job's body here on the CPU, one thread unless told otherwise."""
    from relman.evaluate.job import run

    ctx = JobContext(catalog, device="cpu")
    try:
        params.setdefault("threads", 1)
        return run({"version_id": version_id, **params}, ctx)
    finally:
        ctx.cleanup()
