"""The "explain" job: attributions of one version on chosen examples of a dataset, stored as
an evaluation artifact (no metrics). `relman explain` and the GUI's Explain view queue it.

params:
  version_id   the version to explain (required)
  dataset      dataset id or name (required)
  method       ig, occlusion or shap (the app resolves "auto" before queueing)
  indices      the dataset rows to explain (the app chooses them: seeded, or one example)
  seed, ig_steps, shap_samples, threads, device, baseline (images: blur (default) or black)

A refusal (wrong data, index out of range, a method the version cannot do) fails the job
with one line before anything is computed; the artifact lands in one transaction or not at all.
"""

from __future__ import annotations

from typing import Any

from relman.catalog import EvalArtifact
from relman.errors import EvaluationError
from relman.evaluate.explain import ARTIFACT_KIND, check_task
from relman.evaluate.explain import artifact as art


def run(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
    from relman.data import load_dataset
    from relman.evaluate.explain.attribute import Explainer
    from relman.evaluate.job import _threads
    from relman.modelio.loading import materialize_version
    from relman.tasks import open_runner
    from relman.tasks.backends import resolve_device

    catalog = ctx.catalog
    for key in ("version_id", "dataset", "indices"):
        if key not in params:
            raise EvaluationError(f"an explain job needs '{key}'")
    version = catalog.get_version(int(params["version_id"]))
    check_task(version.task, version.ref)
    method = str(params.get("method") or "auto")
    device = resolve_device(params.get("device") or ctx.device or "auto")
    ctx.progress(0.0, "loading dataset")
    ds = load_dataset(catalog, params["dataset"])
    indices = [int(i) for i in params["indices"]]
    bad = [i for i in indices if not 0 <= i < len(ds)]
    if bad:
        raise EvaluationError(f"example index {bad[0]} is out of range (dataset '{ds.name}' has {len(ds)} rows)")
    folder = materialize_version(catalog, version.id, ctx.workdir)
    runner = open_runner(folder, version.format, version.task, device, _threads(params))
    runner.check_dataset(ds)
    seed = int(params.get("seed", 0))
    explainer = Explainer(runner, method, ref=version.ref, ig_steps=int(params.get("ig_steps", 32)),
                          shap_samples=int(params.get("shap_samples", 64)), seed=seed,
                          baseline=str(params.get("baseline") or "blur"))
    examples = explainer.explain(ds, indices, progress=lambda i, n: ctx.progress(0.05 + 0.9 * i / n,
                                                                                   f"explained {i}/{n}"))
    options: dict[str, Any] = {"ig_steps": explainer.ig_steps} if explainer.method == "ig" else (
        {"shap_samples": explainer.shap_samples} if explainer.method in ("shap", "lime") else {})
    options["baseline"] = explainer.baseline if explainer.image else "pad"
    doc = art.document(version=version, method=explainer.method, dataset=ds, split=None, seed=seed, indices=indices,
                       examples=examples, options=options)
    from relman.evaluate.explain.suite import _finite

    path = art.write(_finite(doc), ctx.workdir, f"attributions-{version.id}.json")
    ctx.check_cancelled()
    catalog.add_evaluation(version.id, [], [EvalArtifact(version_id=version.id, suite="explain", kind=ARTIFACT_KIND,
                                                         path=path, method=explainer.method, dataset_id=ds.id,
                                                         meta=art.meta_of(doc))],
                           job_id=ctx.job_id, actor=ctx.actor, owner=ctx.owner)
    ctx.progress(1.0, f"stored attributions of {len(examples)} example(s)")
    return {"version_id": version.id, "method": explainer.method, "examples": len(examples)}
