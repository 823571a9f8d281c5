"""Accuracy-aware search (job kind "optimize"): try recipes until one meets a quality budget.

The candidates are planned when the job is queued (`plan_candidates`, stored in the job's
params so a search can be read and repeated): a sequence from the most to the least
aggressive — ONNX Runtime INT8 dynamic per-channel → the same with SmoothQuant smoothing →
smoothed with the 1, 2, 4 layers whose INT8 costs the model output most (measured,
`relman.compress.quantize.sensitivity`) kept in float → smoothed with ORT's transformer fusions →
per-tensor dynamic → static (calibrated) → static per-channel → static per-channel with the most
INT8-sensitive layers kept in float; 4-bit weights first for a
causal LM when the objective is size; then, when those recipes are registered, structured
pruning levels and low-rank ranks from strong to mild; FP16 last for size (or on a GPU).

The job runs each candidate in its own process — this one — one after another: the recipe
(the same `apply_recipe` / `commit_child` as a "compress" job, so every tried version is kept
with its lineage and recipe record) and the same evaluation a user would run (the "evaluate"
job's function, called in-process with identical settings for the parent and every child, so
latency figures are comparable). Quality is the dataset's accuracy (classifiers), perplexity
(causal LMs, drop = relative increase) or fidelity cosine (embedders); without a dataset the
quality is the top-1 agreement / cosine with the parent on synthetic inputs, and the report
says so.

Latency is compared as the paired ratio child ÷ parent (`latency_p50_ratio_vs_parent`: the
evaluation times the parent and the candidate in the same process, interleaved rounds, same
inputs and threads, and stores a 95 % bootstrap interval), so a busy moment of the machine
cannot make one candidate look faster than another; a candidate "beats the parent" on latency
only when the whole interval lies below 1. Candidates are ranked by that ratio (the result's
`ranking_by_latency_ratio`), and the Pareto front uses it as its latency axis. The job runs
in an exclusive slot (nothing else on its device while it times).

A candidate meets the budget when its quality drop is within `max_drop` and it beats the
parent on the objective (a "compressed" version that is larger or slower is no answer — e.g.
an ONNX export of a tied-embedding LM stores the table twice). It stops at the first candidate
that meets the budget ("budget met") or when the
candidates run out ("candidates exhausted"). The Pareto frontier over (quality, size, latency)
of the parent and every tried version is stored as an "optimize/pareto" metric (1 on the
frontier, 0 off it) on each, and the job's result names the best version that meets the
budget as MODEL@VERSION with its figures beside the parent's.

Causal language models (`lm_grid`): the search is the INT4 grid — algorithm (rtn, k_quant,
hqq, and gptq when the dataset is text it can calibrate on) × block size (32, 128) × int8
layers (none, the LM head, the 2 most sensitive) — and runs every candidate (`search: "all"`:
a 4-bit model's quality does not fall monotonically along any one axis, so the first within
budget is not the best). Quality is perplexity on a text dataset (the budget is its relative
increase: `--max-ppl-increase 3%`), `mc_acc` on a multiple-choice dataset or
`generate_exact_match` on a question-answer one (absolute drops). Every candidate is kept with
its figures; those within the budget are ranked by the paired latency ratio then size
(objective latency) or size then ratio (objective size): the result's `within_budget`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from relman.errors import RecipeError, RelmanError
from relman.tasks.specs import find_task

if TYPE_CHECKING:
    from relman.catalog import VersionInfo
    from relman.context import CatalogWork, WorkContext

_EXPORTABLE = ("hf", "hf-reshaped", "onnx")
_TORCH = ("hf", "hf-reshaped")


LM_ALGOS = ("rtn", "k_quant", "hqq", "gptq")
LM_BLOCKS = (32, 128)


def is_lm_search(parent: "VersionInfo") -> bool:
    """Whether `parent` gets the language-model search (the INT4 grid, every candidate run)."""
    spec = find_task(parent.task)
    return spec is not None and spec.causal


def lm_grid(text_dataset: str | None) -> list[dict[str, Any]]:
    """The INT4 candidates for a causal LM: algorithm × block size, then each algorithm at
    block 32 with the LM head, and with its 2 most output-sensitive layers, in 8 bits. gptq
    only with a text dataset to calibrate on."""
    algos = [a for a in LM_ALGOS if a != "gptq" or text_dataset]
    out: list[dict[str, Any]] = []
    for algo in algos:
        extra = {"dataset": text_dataset} if algo == "gptq" else {}
        for block in LM_BLOCKS:
            out.append({"params": {"algo": algo, "block_size": block, **extra},
                        "label": f"INT4 {algo}, block {block}"})
    for algo in algos:
        extra = {"dataset": text_dataset} if algo == "gptq" else {}
        out.append({"params": {"algo": algo, "block_size": 32, "int8_layers": ["lm_head"], **extra},
                    "label": f"INT4 {algo}, block 32, LM head in INT8"})
        out.append({"params": {"algo": algo, "block_size": 32, "int8_sensitive": 2, **extra},
                    "label": f"INT4 {algo}, block 32, 2 most sensitive layers in INT8"})
    return out


def plan_candidates(parent: "VersionInfo", *, dataset: str | None = None, recipes: Sequence[str] | None = None,
                    objective: str = "latency", device: str = "cpu",
                    dataset_kind: str | None = None) -> list[dict[str, Any]]:
    """The ordered candidate list for `parent`: [{"recipe", "params", "label"}], only recipes
    that are registered and accept this parent."""
    from relman.compress.registry import RECIPES, all_recipes

    all_recipes()
    out: list[dict[str, Any]] = []

    def add(recipe: str, params: dict[str, Any], label: str) -> None:
        r = RECIPES.get(recipe)
        if r is None or (recipes and recipe not in recipes):
            return
        try:
            r.check_parents([parent])
            r.resolve_params(params)
        except RecipeError:
            return
        out.append({"recipe": recipe, "params": params, "label": label})

    calib = {"dataset": dataset} if dataset else {}
    if is_lm_search(parent):
        for c in lm_grid(text_dataset=dataset if dataset_kind in ("lm", "text") else None):
            add("int4-weight-only", c["params"], c["label"])
        if parent.format in _EXPORTABLE and (objective == "size" or device.startswith("cuda")):
            add("onnx-fp16", {}, "FP16 (ONNX)")
        return out
    if parent.format in _EXPORTABLE:
        if objective == "size":  # add() skips it for tasks it does not apply to
            add("int4-weight-only", {"block_size": 32}, "INT4 weights (block 32)")
        # per-channel dynamic INT8: as small as INT8 gets, and the most faithful dynamic variant;
        # then SmoothQuant smoothing; then as few of the most output-sensitive layers in float as
        # the budget needs (1, 2, 4: the search stops at the first that meets it). ORT's
        # transformer fusions come after: on all-MiniLM-L6-v2 (transformers 5 export, no
        # Attention fusion) the fused graph measured slower than quant_pre_process's
        # (benchmarks/bench_vs_optimum.py), so they are a candidate, not the default.
        pc = {"mode": "dynamic", "per_channel": True}
        add("ort-int8", pc, "ORT INT8 dynamic per-channel")
        add("ort-int8", {**pc, "smooth": True, **calib}, "ORT INT8 dynamic per-channel, smoothed")
        for k in (1, 2, 4):
            add("ort-int8", {**pc, "smooth": True, "keep_sensitive": k, "sensitivity": "outputs", **calib},
                f"ORT INT8 dynamic per-channel, smoothed, {k} most sensitive layer{'s' if k > 1 else ''} in float")
        add("ort-int8", {**pc, "smooth": True, "fusion": True, **calib},
            "ORT INT8 dynamic per-channel, smoothed, ORT transformer fusions")
        add("ort-int8", {"mode": "dynamic"}, "ORT INT8 dynamic")
        add("ort-int8", {"mode": "static", **calib}, "ORT INT8 static")
        add("ort-int8", {"mode": "static", "per_channel": True, **calib}, "ORT INT8 static per-channel")
        add("ort-int8", {"mode": "static", "per_channel": True, "keep_sensitive": 4, **calib},
            "ORT INT8 static per-channel, 4 sensitive layers in float")
        add("ort-int8", {"mode": "dynamic", "per_channel": True, "keep_sensitive": 4},
            "ORT INT8 dynamic per-channel, 4 sensitive layers in float")
    if parent.format in _TORCH:
        for level in (0.5, 0.25, 0.1):
            add("prune-structured", {"heads": level, "ffn": level, "epochs": 0}, f"structured pruning {level:.0%}")
        for energy in (0.8, 0.9, 0.95):
            add("lowrank-svd", {"energy": energy}, f"low-rank SVD ({energy:.0%} energy)")
        if objective == "size" or device.startswith("cuda"):
            add("half", {"dtype": "float16"}, "FP16 (PyTorch)")
    if parent.format in _EXPORTABLE and (objective == "size" or device.startswith("cuda")):
        add("onnx-fp16", {}, "FP16 (ONNX)")
    return out


@dataclass
class Figures:
    ref: str
    version_id: int
    quality: float | None
    drop: float | None
    size_bytes: float | None
    latency_ms: float | None
    latency_ratio: float | None = None  # child / parent p50, paired in one job (parent: 1.0)
    latency_ratio_interval: list[float] | None = None
    label: str = ""
    recipe: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    improves: bool = False
    meets: bool = False
    pareto: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def pareto_front(points: list[tuple[float, float, float]]) -> list[bool]:
    """Which points no other point dominates; each is (quality ↑, size ↓, latency ↓)."""
    flags = []
    for i, (q, s, l) in enumerate(points):
        dominated = False
        for j, (q2, s2, l2) in enumerate(points):
            if j != i and q2 >= q and s2 <= s and l2 <= l and (q2 > q or s2 < s or l2 < l):
                dominated = True
                break
        flags.append(not dominated)
    return flags


class _Slice:
    """The job's context with progress mapped into [lo, hi] of the whole search."""

    def __init__(self, ctx: "WorkContext", lo: float, hi: float, label: str) -> None:
        self._ctx, self._lo, self._hi, self._label = ctx, lo, hi, label

    def progress(self, fraction: float, message: str = "") -> None:
        f = min(1.0, max(0.0, float(fraction)))
        text = f"{self._label}: {message}" if message else self._label
        self._ctx.progress(self._lo + (self._hi - self._lo) * f, text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._ctx, name, value)


LM_QUALITY_BY_KIND = {"mcq": ("mc", "mc_acc", True), "qa": ("generate", "generate_exact_match", True)}


def quality_kind(task: str | None, dataset: str | None, dataset_kind: str | None = None) -> tuple[str, str, bool]:
    """(suite, metric, higher_is_better) that measures quality for this task: the task table's
    quality metric on a dataset (for a causal LM on multiple-choice or question-answer data,
    that data's own suite), else fidelity to the parent (on the dataset, or synthetic)."""
    spec = find_task(task)
    if dataset and spec is not None and spec.causal and dataset_kind in LM_QUALITY_BY_KIND:
        return LM_QUALITY_BY_KIND[dataset_kind]
    if dataset and spec is not None and spec.quality_metric is not None:
        name, higher = spec.quality_metric
        return "quality", name, higher
    if dataset:
        return "fidelity", "cosine", True
    cosine = spec is not None and spec.fidelity_metric == "cosine"
    return "optimize", "synthetic_cosine" if cosine else "synthetic_agreement", True


def synthetic_fidelity(ctx: "CatalogWork", parent: "VersionInfo", child: "VersionInfo") -> float:
    """Top-1 agreement (cosine for embedders) of child and parent on seeded synthetic inputs."""
    import numpy as np

    from relman.modelio.loading import materialize_version
    from relman.tasks import open_runner

    task = parent.task or ""
    spec = find_task(task)
    pr = open_runner(materialize_version(ctx.catalog, parent.id, ctx.workdir), parent.format, task, "cpu")
    cr = open_runner(materialize_version(ctx.catalog, child.id, ctx.workdir), child.format, task, "cpu")
    scores = []
    for seed in range(4):
        seq = 32 if spec is not None and spec.modality == "text" else None
        bp, bc = pr.prepare_synthetic(16, seq, seed=seed), cr.prepare_synthetic(16, seq, seed=seed)
        op, oc = pr.predict(bp), cr.predict(bc)
        if spec is not None and spec.fidelity_metric == "cosine":
            scores.append(float(np.mean(np.sum(op * oc, axis=-1))))
        else:
            scores.append(float(np.mean(op.argmax(-1) == oc.argmax(-1))))
    return float(np.mean(scores))


def _evaluate(ctx: Any, version: "VersionInfo", parent: "VersionInfo | None", params: dict[str, Any]) -> None:
    from relman.evaluate import registry
    from relman.evaluate.job import run as evaluate_run

    dataset = params.get("dataset")
    suites = list(registry.default_suites(version.task, bool(dataset)))
    suite, _, _ = quality_kind(version.task, dataset, params.get("dataset_kind"))
    if suite in ("mc", "generate"):  # a causal LM judged on its answers, not its perplexity
        suites = [s for s in suites if s != "quality"] + [suite]
    elif dataset and parent is not None and not is_lm_search(version):
        suites.append("fidelity")
    plan: dict[str, Any] = {"version_id": version.id, "suites": registry.ordered(suites),
                            "batch_sizes": [int(params.get("batch_size", 1))],
                            "seq_lens": [int(params.get("seq_len", 64))],
                            "options": {"time_budget_s": float(params.get("latency_budget_s", 2.0)),
                                        "min_samples": int(params.get("latency_samples", 30)), "warmup": 3}}
    if dataset:
        plan["dataset"] = dataset
        if params.get("max_samples"):
            plan["max_samples"] = int(params["max_samples"])
    if parent is not None and "fidelity" in suites:
        plan["parent_version_id"] = parent.id
    evaluate_run(plan, ctx)


def _figures(ctx: Any, v: "VersionInfo", parent_fig: Figures | None, params: dict[str, Any]) -> Figures:
    suite, name, higher = quality_kind(v.task, params.get("dataset"), params.get("dataset_kind"))
    values = {(m["suite"], m["name"]): m["value"] for m in ctx.catalog.metrics(v.id)}
    quality = values.get((suite, name))
    if quality is None and suite == "fidelity" and parent_fig is None:
        quality = 1.0  # the parent is perfectly faithful to itself
    if quality is None and suite == "optimize":
        quality = 1.0 if parent_fig is None else None
    drop = None
    if parent_fig is not None and quality is not None and parent_fig.quality is not None:
        if name == "perplexity":
            drop = quality / parent_fig.quality - 1.0
        else:
            drop = parent_fig.quality - quality if higher else quality - parent_fig.quality
    latency = values.get(("latency", "latency_p50_ms"))
    ratio, interval = (1.0, [1.0, 1.0]) if parent_fig is None else (None, None)
    if parent_fig is not None:
        row = next((m for m in ctx.catalog.metrics(v.id) if m["name"] == "latency_p50_ratio_vs_parent"
                    and m["context"].get("reference") == parent_fig.ref), None)
        if row is not None:
            ratio, interval = row["value"], row["context"].get("interval")
    return Figures(ref=v.ref, version_id=v.id, quality=quality, drop=drop,
                   size_bytes=values.get(("size", "size_bytes"), float(v.size_bytes)), latency_ms=latency,
                   latency_ratio=ratio, latency_ratio_interval=interval)


def run(params: dict[str, Any], ctx: "CatalogWork") -> dict[str, Any]:
    """Job kind "optimize"."""
    from relman.catalog import Metric
    from relman.compress.job import apply_recipe, commit_child, committed_by_job
    from relman.compress.registry import get_recipe

    parent = ctx.catalog.get_version(int(params["parent_version_id"]))
    max_drop = float(params.get("max_drop", 0.01))
    objective = params.get("objective", "latency")
    dataset = params.get("dataset") or None
    candidates = list(params.get("candidates") or plan_candidates(parent, dataset=dataset, objective=objective,
                                                                 device=ctx.device))
    if not candidates:
        raise RecipeError(f"no compression recipe applies to {parent.ref}")
    suite, qname, higher = quality_kind(parent.task, dataset, params.get("dataset_kind"))
    search_all = params.get("search") == "all"
    # Latency is judged by the paired ratio to the parent (both timed in the same job, in
    # interleaved rounds), never by absolute times taken at different moments.
    key = "latency_ratio" if objective == "latency" else "size_bytes"
    n = len(candidates) + 1
    ctx.log_json("optimize", {"parent": parent.ref, "max_drop": max_drop, "objective": objective,
                              "dataset": dataset, "candidates": candidates})
    _evaluate(_Slice(ctx, 0.0, 1.0 / n, f"evaluating {parent.ref}"), parent, None, params)
    base = _figures(ctx, parent, None, params)
    base.label = "parent"
    tried: list[Figures] = []
    failures: list[dict[str, Any]] = []
    stopped = "candidates exhausted"
    for i, cand in enumerate(candidates, start=1):
        ctx.check_cancelled()
        label = cand.get("label") or cand["recipe"]
        piece = _Slice(ctx, i / n, (i + 1) / n, f"[{i}/{len(candidates)}] {label}")
        try:
            recipe = get_recipe(cand["recipe"])
            recipe.check_parents([parent])
            resolved = recipe.resolve_params(dict(cand.get("params") or {}))
            child = committed_by_job(ctx, recipe, [parent], resolved)  # a retry keeps what it stored
            if child is None:
                output = apply_recipe(piece, recipe, [parent], resolved, subdir=f"candidate-{i}")
                ctx.check_cancelled()
                child = commit_child(piece, recipe, [parent], resolved, output, model=params.get("model"),
                                     version=None, dataset=dataset)
        except RelmanError as e:
            if e.__class__.__name__ == "JobCancelled":
                raise
            failures.append({"label": label, "recipe": cand["recipe"], "error": str(e)})
            ctx.log("candidate %s failed: %s", label, e)
            continue
        _evaluate(piece, child, parent, params)
        if suite == "optimize":
            ctx.catalog.add_metrics(child.id, [Metric("optimize", qname, synthetic_fidelity(ctx, parent, child),
                                                      {"inputs": "synthetic, 4 x 16", "parent": parent.ref})],
                                    job_id=ctx.job_id, actor=ctx.actor)
        fig = _figures(ctx, child, base, params)
        fig.label, fig.recipe, fig.params = label, recipe.name, resolved
        ours, theirs = getattr(fig, key), getattr(base, key)
        if key == "latency_ratio":  # faster with 95 % confidence: the interval lies below 1
            iv = fig.latency_ratio_interval
            fig.improves = ours is not None and iv is not None and iv[1] < 1.0
        else:
            fig.improves = ours is not None and theirs is not None and ours < theirs
        fig.meets = fig.drop is not None and fig.drop <= max_drop and fig.improves
        tried.append(fig)
        ctx.log_json("candidate", fig.as_dict())
        if fig.meets and not search_all:
            stopped = "budget met"
            break
    if search_all:
        stopped = "every candidate tried"
    everyone = [base] + tried
    scored = [f for f in everyone if None not in (f.quality, f.size_bytes, f.latency_ratio)]
    points = [((f.quality if higher else -f.quality), f.size_bytes, f.latency_ratio) for f in scored]  # type: ignore
    for f, on in zip(scored, pareto_front(points)):  # type: ignore[arg-type]
        f.pareto = on
    with ctx.catalog.transaction():
        for f in everyone:
            ctx.catalog.add_metrics(f.version_id, [Metric("optimize", "pareto", 1.0 if f.pareto else 0.0,
                                                          {"search_job": ctx.job_id, "objective": objective,
                                                           "axes": ["quality", "size_bytes", "latency_p50_ratio_vs_parent"]})],
                                    job_id=ctx.job_id, actor=ctx.actor)
    within = rank_within_budget(tried, max_drop, objective)
    best = next((f for f in within if f.meets), None)  # within budget and better than the parent, ranked
    ranking = sorted((f for f in tried if f.latency_ratio is not None), key=lambda f: f.latency_ratio)
    ctx.progress(1.0, f"{stopped}; best: {best.ref if best else 'none within the budget'}")
    return {"parent": base.as_dict(), "tried": [f.as_dict() for f in tried], "failed": failures,
            "best": best.ref if best else None, "best_figures": best.as_dict() if best else None,
            "stopped": stopped, "objective": objective, "max_drop": max_drop,
            "ranking_by_latency_ratio": [{"ref": f.ref, "latency_p50_ratio_vs_parent": f.latency_ratio,
                                          "interval": f.latency_ratio_interval} for f in ranking],
            "within_budget": [{"ref": f.ref, "label": f.label, "drop": f.drop, "latency_p50_ratio_vs_parent": f.latency_ratio,
                               "interval": f.latency_ratio_interval, "size_bytes": f.size_bytes} for f in within],
            "search": "all" if search_all else "first within budget",
            "quality_metric": f"{suite}/{qname}", "quality_source": "dataset" if dataset else "synthetic agreement"}


def rank_within_budget(tried: Sequence[Figures], max_drop: float, objective: str) -> list[Figures]:
    """The candidates whose quality drop is within `max_drop`, best first: by the paired latency
    ratio then size (objective latency), or size then ratio (objective size); a candidate with no
    ratio measured sorts after those with one."""
    inf = float("inf")

    def key(f: Figures) -> tuple[float, float]:
        ratio = f.latency_ratio if f.latency_ratio is not None else inf
        size = f.size_bytes if f.size_bytes is not None else inf
        return (ratio, size) if objective == "latency" else (size, ratio)

    return sorted((f for f in tried if f.drop is not None and f.drop <= max_drop), key=key)
