"""The `explain` suite: attributions of a version on N seeded examples, their faithfulness,
and (when the version has a parent) how closely they agree with the parent's.

Metrics (suite "explain"):
- `explain_comprehensiveness`, `explain_sufficiency`: AOPC of the version's own attributions
  (mean drop of the explained score when the top 10..50 % features are removed / kept alone);
- with a parent, on the same examples with the same method:
  `explain_agreement_vs_parent` (mean Spearman rho of attribution magnitudes),
  `explain_topk_overlap_vs_parent` (k = 5), `explain_prediction_agreement_vs_parent` (share of
  examples with the same prediction) and `explain_flips` (how many differ).
- `explain_randomisation_agreement` (lower is better): the model-randomisation sanity check
  (`sanity`): agreement of the attributions with those of a re-initialised copy of the
  version's own weights (in memory), or of the parent's when the version has none to
  re-initialise (ONNX, INT8). Above `explain_randomisation_threshold` (0.5) the explanations
  do not depend on the weights: every explain metric of the run gets `untrustworthy` (why) in
  its context, and gates refuse to pass on it.
Context: method, examples, seed, parent, baseline, measure, and a 95 % bootstrap interval of
each mean (`ci95`, also as `interval` for gate bounds such as `explain_agreement_vs_parent.lower`).

Agreement is measured with `compare.agreement` (default measure `model`: signed attributions
over the features that are not inert), so it measures the models, not their shared input.

The method is `explain_method` (default `auto`: Integrated Gradients when both versions have
gradients, else occlusion for both, so the comparison is always like with like). The
per-example attributions of the version and of its parent are stored as artifacts of the
evaluation (see `artifact`), which the GUI and the model card read.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from relman.catalog import EvalArtifact, Metric
from relman.errors import EvaluationError
from relman.evaluate.env import SuiteEnv
from relman.evaluate.explain import ARTIFACT_KIND, check_task
from relman.evaluate.explain import artifact as art
from relman.evaluate.explain.compare import DEFAULT_MEASURE, compare_examples, nanmean
from relman.evaluate.explain.sanity import THRESHOLD, can_randomise

SUITE = "explain"


def bootstrap_ci(values: list[float], seed: int = 0, rounds: int = 1000) -> list[float] | None:
    arr = np.asarray([v for v in values if v is not None and not np.isnan(v)], dtype=np.float64)
    if len(arr) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, len(arr), size=(rounds, len(arr)))].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def run(env: SuiteEnv) -> list[Metric]:
    """The suite. Under a time budget (a compress job's automatic evaluation) it is best
    effort: an explainer that fails stores nothing and says why in the job's log, so it never
    costs the child its quality numbers; asked for directly, a failure fails the job."""
    if float(env.options.get("explain_budget_s", 0) or 0) <= 0:
        return _run(env)
    kept = len(env.artifacts)
    try:
        return _run(env)
    except Exception as e:  # noqa: BLE001 — best effort, reported, never silent
        del env.artifacts[kept:]  # nothing half-made is stored
        if env.ctx is not None:
            env.ctx.log("explain skipped in the automatic evaluation: %s", e)
        env.progress(1.0, f"explain skipped: {e}")
        return []


def _run(env: SuiteEnv) -> list[Metric]:
    from relman.evaluate.explain.attribute import Explainer, differentiable, select_examples
    from relman.tasks import open_runner

    check_task(env.model.task, env.model.ref)
    runner = env.runner()
    ds = env.eval_data(SUITE)
    o = env.options
    seed = int(o.get("explain_seed", 0))
    parent_runner = None
    if env.parent is not None:
        if env.parent.task != env.model.task:
            raise EvaluationError(f"explain compares attributions with the parent, but {env.parent.ref} does "
                                  f"{env.parent.task} and {env.model.ref} does {env.model.task}")
        parent_runner = open_runner(env.parent.folder, env.parent.fmt, env.parent.task, env.device, env.threads)
    method = str(o.get("explain_method", "auto"))
    if method == "auto":
        both = differentiable(runner) and (parent_runner is None or differentiable(parent_runner))
        method = "ig" if both else "occlusion"
    kw: dict[str, Any] = {"ig_steps": int(o.get("ig_steps", 32)), "shap_samples": int(o.get("shap_samples", 64)),
                          "seed": seed, "baseline": str(o.get("explain_baseline", "blur"))}
    measure = str(o.get("explain_measure", DEFAULT_MEASURE))
    explainer = Explainer(runner, method, ref=env.model.ref, **kw)
    pexplainer = Explainer(parent_runner, method, ref=env.parent.ref, **kw) if parent_runner is not None else None
    indices = select_examples(len(ds), int(o.get("explain_examples", 32)), seed)
    budget = float(o.get("explain_budget_s", 0) or 0)
    if budget > 0 and _over_budget(env, explainer, ds, indices, budget, passes=3 if pexplainer else 2):
        return []
    share = 0.5 if pexplainer is not None else 1.0
    examples = explainer.explain(
        ds, indices, progress=lambda i, n: env.progress(share * i / n, f"explain {env.model.ref} {i}/{n}"))
    split = o.get("split") if ds.split is not None else None
    ctx: dict[str, Any] = {"method": method, "examples": len(indices), "seed": seed,
                           "baseline": explainer.baseline if explainer.image else "pad", "measure": measure}
    if method == "ig":
        ctx["ig_steps"] = kw["ig_steps"]
    elif method in ("shap", "lime"):
        ctx["shap_samples"] = kw["shap_samples"]
    comp = [e["comprehensiveness"] for e in examples]
    suff = [e["sufficiency"] for e in examples]
    metrics = [env.metric(SUITE, "explain_comprehensiveness", nanmean(comp), **ctx, **_ci(comp, seed)),
               env.metric(SUITE, "explain_sufficiency", nanmean(suff), **ctx, **_ci(suff, seed))]
    compared_with = None
    rows: list[dict[str, Any]] = []
    if pexplainer is not None:
        # the parent's attributions for these settings may be stored already (another child's
        # evaluation, `relman explain`): its files never change, so they are reused
        pexamples = None
        if env.catalog is not None and env.parent.info is not None and ds.id is not None:
            pexamples = art.reusable(env.catalog, env.parent.info.id, dataset=ds, split=split,
                                     key=art.method_key(method, ctx, seed), indices=indices)
        reused = pexamples is not None
        if pexamples is None:
            pexamples = pexplainer.explain(
                ds, indices, faithfulness=False,
                progress=lambda i, n: env.progress(0.5 + 0.5 * i / n, f"explain parent {env.parent.ref} {i}/{n}"))
        try:
            rows = compare_examples(examples, pexamples, measure=measure)
        except ValueError as e:
            raise EvaluationError(f"{env.model.ref} vs {env.parent.ref}: {e}") from None
        compared_with = env.parent.ref
        pctx = dict(ctx, parent=env.parent.ref)
        rho = [r["rho"] for r in rows]
        top = [r["topk"] for r in rows]
        same = [0.0 if r["flipped"] else 1.0 for r in rows]
        metrics += [
            env.metric(SUITE, "explain_agreement_vs_parent", nanmean(rho), **pctx, **_ci(rho, seed),
                       undefined=int(sum(1 for r in rho if np.isnan(r)))),
            env.metric(SUITE, "explain_topk_overlap_vs_parent", nanmean(top), **pctx, k=5, **_ci(top, seed)),
            env.metric(SUITE, "explain_prediction_agreement_vs_parent", nanmean(same), **pctx),
            env.metric(SUITE, "explain_flips", float(len(same) - sum(same)), **pctx),
        ]
        metrics[-1] = env.metric(SUITE, "explain_flips", float(len(same) - sum(same)), **pctx,
                                 parent_attributions="stored" if reused else "computed")
        if env.parent.info is not None and not reused:
            pdoc = art.document(version=env.parent.info, method=method, dataset=ds, split=split, seed=seed,
                                indices=indices, examples=pexamples, options=ctx)
            env.artifacts.append(_artifact(env, pdoc, env.parent.info.id, f"attributions-parent-{env.parent.info.id}"))
    if o.get("explain_randomisation", True):
        own = (explainer, examples, env.model.ref) if can_randomise(runner) else None
        if own is None and pexplainer is not None and can_randomise(parent_runner):
            own = (pexplainer, pexamples, env.parent.ref)
        metrics = _randomisation(env, metrics, own, ds, indices, ctx, measure, seed,
                                 float(o.get("explain_randomisation_threshold", THRESHOLD)))
    if env.model.info is not None:
        doc = art.document(version=env.model.info, method=method, dataset=ds, split=split, seed=seed,
                           indices=indices, examples=examples, compared_with=compared_with, options=ctx)
        doc["comparison"] = rows
        env.artifacts.append(_artifact(env, doc, env.model.info.id, f"attributions-{env.model.info.id}"))
    return metrics


def _over_budget(env: SuiteEnv, explainer: Any, ds: Any, indices: list[int], budget: float, passes: int) -> bool:
    """Time one example; when all of them (the version, its parent, the randomised copy)
    would take longer than `budget` seconds, queue the explain suite as its own evaluate job
    (no budget) and say so: True. A compress job's automatic evaluation sets the budget, so
    a slow explainer never holds up the child's quality numbers."""
    import time

    t0 = time.perf_counter()
    explainer.explain(ds, indices[:1])
    projected = (time.perf_counter() - t0) * len(indices) * passes
    if projected <= budget or env.ctx is None or env.model.info is None:
        return False
    params: dict[str, Any] = {"version_id": env.model.info.id, "suites": [SUITE],
                              "options": {**env.options, "explain_budget_s": 0}}
    if env.dataset is not None:
        params["dataset"] = env.dataset.id
    if env.parent is not None and env.parent.info is not None:
        params["parent_version_id"] = env.parent.info.id
    job_id = env.ctx.queue_job("evaluate", params, device=env.device)
    env.progress(1.0, f"explain would take ~{projected:.0f} s > budget {budget:.0f} s: queued as job {job_id}")
    return True


def _ci(values: list[float], seed: int) -> dict[str, Any]:
    ci = bootstrap_ci(values, seed)
    return {"ci95": ci, "interval": ci}


def _randomisation(env: SuiteEnv, metrics: list[Metric], own: tuple[Any, list[dict[str, Any]], str] | None,
                   ds: Any, indices: list[int], ctx: dict[str, Any], measure: str, seed: int,
                   threshold: float) -> list[Metric]:
    """The model-randomisation check (see `sanity`): its metric, and every explain metric of
    the run marked untrustworthy when it fails. Without float PyTorch weights on either side
    the check cannot run; the metrics say so (`randomisation: not possible`)."""
    from relman.evaluate.explain.sanity import randomised, verdict

    if own is None:
        note = {"randomisation": "not possible (no float PyTorch weights to re-initialise)"}
        return [replace(m, context={**m.context, **note}) for m in metrics]
    explainer, trained, ref = own
    with randomised(explainer.runner, seed):
        rand = explainer.explain(ds, indices, faithfulness=False,
                                 progress=lambda i, n: env.progress(0.95, f"randomisation check {ref} {i}/{n}"))
    rho = [r["rho"] for r in compare_examples(rand, trained, measure=measure)]
    value = nanmean(rho)
    why = verdict(value, threshold)
    rctx = dict(ctx, randomised=ref, reinitialisation="full", threshold=threshold, **_ci(rho, seed),
                undefined=int(sum(1 for r in rho if np.isnan(r))))
    mark: dict[str, Any] = {"randomisation_agreement": value, **({"untrustworthy": why} if why else {})}
    return [replace(m, context={**m.context, **mark})
            for m in [*metrics, env.metric(SUITE, "explain_randomisation_agreement", value, **rctx)]]


def _artifact(env: SuiteEnv, doc: dict[str, Any], version_id: int, stem: str) -> EvalArtifact:
    path = art.write(_finite(doc), env.scratch(), f"{stem}.json")
    return EvalArtifact(version_id=version_id, suite=SUITE, kind=ARTIFACT_KIND, path=path, method=doc["method"],
                        dataset_id=env.dataset.id if env.dataset is not None else None, meta=art.meta_of(doc))


def _finite(obj: Any) -> Any:
    """NaN / inf become null, so the document is strict JSON."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
