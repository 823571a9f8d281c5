"""The metric-suite registry: name → "module:function" + typed options. Data only.

Nothing here imports torch, numpy-heavy code or the suite modules, so the CLI and GUI can list
suites, validate `--option k=v` and queue evaluations at start-up cost; the worker imports a
suite's module only when it runs. A new suite = one module in `relman/evaluate/` with a
`run(env) -> list[Metric]` function, plus one `register(Suite(...))` line below; which tasks a
suite applies to is said by the task table (`relman.tasks.specs`, each task's `suites`).

Options are one flat namespace across suites (each option belongs to the suites that declare
it); `resolve_options` rejects names no chosen suite knows, so a typo is an error, not a
silently ignored setting.
"""

from __future__ import annotations

from relman import targets
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from relman.errors import EvaluationError
from relman.tasks.specs import find_task, tasks_with_suite
from relman.typed_params import TypedValue


class Option(TypedValue):
    """An evaluation option (`relman evaluate ... -o name=value`)."""

    error = EvaluationError
    noun = "option"


@dataclass(frozen=True)
class MetricSpec:
    """A family of metrics a suite stores, by name prefix, and which way is better.

    Declared once, with the suite that measures it; the gates' "measure it with" hints, the
    GUI's Pareto fronts and deltas all read it (`metric_spec`, `higher_is_better`).
    `higher_is_better=None`: a count or a condition, no direction (eval_samples, mcnemar_p)."""

    prefix: str
    higher_is_better: bool | None


@dataclass(frozen=True)
class Suite:
    name: str
    title: str
    target: str  # "module:function", imported in the worker only
    dataset: str = "required"  # "required", "optional" or "none"
    needs_labels: bool = False
    needs_groups: bool = False
    needs_parent: bool = False
    timing: bool = False  # measures time or memory: its job runs alone on its device
    options: tuple[Option, ...] = ()
    description: str = ""
    metrics: tuple[MetricSpec, ...] = ()  # what it stores (longest matching prefix wins)
    data_kinds: tuple[str, ...] = ()  # dataset kinds it reads (empty: any its task reads)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks this suite applies to: those whose entry in the task table lists it."""
        return tasks_with_suite(self.name)

    def needs_labels_for(self, task: str | None) -> bool:
        """Labels are needed unless the task is unlabelled (a causal LM's quality is perplexity)."""
        spec = find_task(task)
        return self.needs_labels and not (spec is not None and spec.labels == "none")

    def function(self) -> Callable[..., Any]:
        fn: Callable[..., Any] = targets.resolve(self.target)
        return fn


SUITES: dict[str, Suite] = {}
# The order suites run in within one job: memory first, before anything else has loaded the
# model into this process, so its measurement of loading + inference is not disturbed.
ORDER = ("memory", "size", "latency", "quality", "fidelity", "mc", "generate", "robustness", "fairness", "explain")


def register(suite: Suite) -> Suite:
    if suite.name in SUITES:
        raise ValueError(f"suite {suite.name} registered twice")
    SUITES[suite.name] = suite
    return suite


def get_suite(name: str) -> Suite:
    try:
        return SUITES[name]
    except KeyError:
        raise EvaluationError(f"unknown suite '{name}' (known: {', '.join(all_suite_names())})") from None


def all_suite_names() -> list[str]:
    return sorted(SUITES, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def ordered(names: Iterable[str]) -> list[str]:
    """Suites in run order, each once; unknown names are an error."""
    wanted = []
    for n in names:
        get_suite(n)
        if n not in wanted:
            wanted.append(n)
    return [n for n in all_suite_names() if n in wanted]


def default_suites(task: str | None, has_dataset: bool) -> list[str]:
    """size + latency, and with a dataset the task's own defaults (quality, where it has one)."""
    base = ["size", "latency"]
    spec = find_task(task)
    if has_dataset and spec is not None:
        base.extend(spec.default_suites)
    return ordered(base)


def is_timing_request(params: dict[str, Any]) -> bool:
    """Whether an evaluate job with these params times something (latency, memory), so the
    runner gives it its device alone. No suites named = the defaults, which include latency."""
    suites = params.get("suites") or ["latency"]
    return any(name in SUITES and SUITES[name].timing for name in suites)


def metric_spec(name: str) -> tuple[Suite, MetricSpec] | None:
    """The suite that stores metric `name` and its declaration (longest prefix over all suites)."""
    best: tuple[Suite, MetricSpec] | None = None
    for suite in SUITES.values():
        for spec in suite.metrics:
            if name.startswith(spec.prefix) and (best is None or len(spec.prefix) > len(best[1].prefix)):
                best = (suite, spec)
    return best


def suite_for_metric(name: str) -> str | None:
    """The suite that measures metric `name` (None when no suite does, e.g. canary_share)."""
    found = metric_spec(name)
    return found[0].name if found else None


def higher_is_better(name: str) -> bool | None:
    """Which way metric `name` improves, as its suite declares (None: undeclared or no direction)."""
    found = metric_spec(name)
    return found[1].higher_is_better if found else None


def resolve_options(suites: Sequence[str], raw: dict[str, Any] | None) -> dict[str, Any]:
    """Typed values for every option of `suites` (defaults filled in); unknown names refused."""
    raw = dict(raw or {})
    known: dict[str, Option] = {}
    for s in suites:
        for o in get_suite(s).options:
            known.setdefault(o.name, o)
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise EvaluationError(f"no chosen suite ({', '.join(suites)}) takes option {', '.join(unknown)} "
                              f"(they take: {', '.join(sorted(known)) or 'none'})")
    return {name: (o.parse(raw[name]) if name in raw else o.default) for name, o in known.items()}


_PAIRED = Option("paired", bool, True, "Compare with the parent and the production version in the same job: "
                                       "latency in interleaved rounds (latency_p50_ratio_vs_parent / _vs_production) "
                                       "and quality on the same rows (accuracy_delta_vs_parent / _vs_production), "
                                       "with 95 % intervals.")
_SPLIT = Option("split", str, "test", "Rows of this split when the dataset has a split column (else all rows).")
_EVAL_BS = Option("eval_batch_size", int, 32, "Batch size for quality / fidelity / robustness / fairness.",
                  min=1, max=4096)

register(Suite(
    "quality", "Task quality", "relman.evaluate.quality:run", needs_labels=True, options=(_SPLIT, _EVAL_BS, _PAIRED),
    description="accuracy, macro-F1 and per-class precision/recall/F1; perplexity for causal LMs",
    metrics=(MetricSpec("accuracy", True), MetricSpec("macro_f1", True), MetricSpec("precision/", True), MetricSpec("recall/", True), MetricSpec("f1/", True), MetricSpec("loss", False), MetricSpec("perplexity", False), MetricSpec("bits_per_byte", False), MetricSpec("bytes", None), MetricSpec("eval_samples", None), MetricSpec("eval_throughput", True), MetricSpec("entity_", True), MetricSpec("token_accuracy", True), MetricSpec("reference_accuracy", True), MetricSpec("child_only_right", True), MetricSpec("child_only_wrong", False), MetricSpec("mcnemar_p", None),)))
register(Suite(
    "fidelity", "Fidelity to the parent", "relman.evaluate.fidelity:run", needs_parent=True,
    options=(_SPLIT, _EVAL_BS),
    description="top-1 agreement and KL(parent || version) of logits, or cosine of embeddings",
    metrics=(MetricSpec("agreement", True), MetricSpec("kl_div", False), MetricSpec("cosine", True), MetricSpec("fidelity", True),)))
register(Suite(
    "size", "Size on disk and parameters", "relman.evaluate.size:run", dataset="none",
    description="bytes on disk, size in MiB, parameter count",
    metrics=(MetricSpec("size_", False), MetricSpec("params", False),)))
register(Suite(
    "memory", "Peak inference memory", "relman.evaluate.memory:run", dataset="optional", timing=True,
    options=(Option("memory_batches", int, 3, "Inference batches run while memory is watched.", min=1),),
    description="peak RSS (CPU) or max allocated (CUDA) of loading the model and running it",
    metrics=(MetricSpec("peak_", False), MetricSpec("model_rss", False),)))
register(Suite(
    "latency", "Latency and throughput", "relman.evaluate.latency:run", dataset="optional", timing=True,
    options=(
        Option("warmup", int, 10, "Warm-up runs discarded before timing.", min=0),
        Option("min_samples", int, 200, "Timed runs per configuration (at least).", min=5),
        Option("time_budget_s", float, 20.0, "Stop a configuration after this long, even short of min_samples.",
               min=0.01),
        _PAIRED,
        Option("generation", bool, True, "Causal LMs: also time greedy generation (time to first token, "
                                         "decode tokens/s, paired ratios)."),
        Option("generate_tokens", int, 16, "Causal LMs: new tokens per timed generation (EOS ignored).",
               min=2, max=4096),
        Option("generation_prompts", int, 2, "Causal LMs: prompts per round.", min=1, max=64),
        Option("prompt_tokens", int, 0, "Causal LMs: prompt length in tokens (0: the first sequence length, "
                                        "else 32).", min=0, max=32768),
        Option("generation_rounds", int, 10, "Causal LMs: interleaved generation rounds (at least 5).",
               min=5, max=10000),
        Option("generation_budget_s", float, 20.0, "Causal LMs: stop generation rounds after this long "
                                                   "(after 5 rounds).", min=0.01),
    ),
    description="p50/p90/p95/p99 latency and throughput per batch size and sequence length; "
                "paired ratios vs parent and production; for causal LMs time to first token and "
                "decode tokens/s, paired too",
    metrics=(MetricSpec("latency_", False), MetricSpec("throughput", True), MetricSpec("ttft_", False),
             MetricSpec("decode_tokens", True), MetricSpec("generate_tokens", True))))
register(Suite(
    "robustness", "Robustness to perturbations", "relman.evaluate.robustness:run", needs_labels=True,
    options=(
        _SPLIT, _EVAL_BS,
        Option("seed", int, 0, "Seed of the perturbations.", min=0, max=2**31 - 1),
        Option("perturb_rate", float, 0.1, "Share of characters a text perturbation touches.", min=0, max=1),
        Option("noise_std", float, 0.1, "Gaussian image noise, as a fraction of the pixel range.", min=0),
        Option("brightness", float, 0.3, "Largest relative brightness change.", min=0, max=1),
        Option("shift_px", int, 1, "Largest image shift in pixels.", min=0),
        Option("fgsm_epsilon", float, 0.05, "FGSM step in normalised input units (PyTorch versions); 0 = off.",
               min=0),
    ),
    description="accuracy under seeded text/image perturbations (and FGSM) and the drop from clean",
    metrics=(MetricSpec("robust_accuracy", True), MetricSpec("robustness_drop", False), MetricSpec("clean_accuracy", True),)))
register(Suite(
    "fairness", "Fairness across groups", "relman.evaluate.fairness:run", needs_labels=True, needs_groups=True,
    options=(
        _SPLIT, _EVAL_BS,
        Option("positive_label", str, "", "The 'selected' class for selection rates (default: the second label "
                                          "of a binary model)."),
    ),
    description="per-group accuracy and selection rate, largest gap, demographic parity and equalized odds",
    metrics=(MetricSpec("fairness_gap", False), MetricSpec("demographic_parity", False), MetricSpec("equalized_odds", False), MetricSpec("group_", True), MetricSpec("selection_rate", None), MetricSpec("selection_rate_gap", False),)))
register(Suite(
    "explain", "Explanations and their drift from the parent", "relman.evaluate.explain.suite:run",
    # applies to the tasks whose entry in relman.tasks.specs lists it: those with an explainer
    # (relman.evaluate.explain.EXPLAINERS; a test keeps the two in step)
    options=(
        _SPLIT,
        Option("explain_examples", int, 32, "Seeded examples explained (the same for the version and its parent).",
               min=1, max=100000),
        Option("explain_method", str, "auto", "ig, occlusion, shap, lime, attention (rollout) or auto (ig when both "
                                              "versions have gradients, else occlusion).",
               choices=("auto", "ig", "occlusion", "shap", "lime", "attention")),
        Option("explain_seed", int, 0, "Seed of the example choice (and of KernelSHAP's samples)."),
        Option("ig_steps", int, 32, "Integrated Gradients interpolation steps.", min=2, max=1024),
        Option("shap_samples", int, 64, "KernelSHAP (and LIME) coalitions per example.", min=8, max=100000),
        Option("explain_baseline", str, "blur", "What a removed image patch becomes: blur (a blurred copy of the "
                                                "image) or black (zero input gets zero attribution from any "
                                                "model). Text always uses the padding token.",
               choices=("blur", "black")),
        Option("explain_measure", str, "model", "Agreement measure: model (signed attributions, features not "
                                                "fixed by the input) or magnitude-all (before issue 27).",
               choices=("model", "magnitude-all")),
        Option("explain_randomisation", bool, True, "Run the model-randomisation sanity check."),
        Option("explain_budget_s", float, 0.0, "Seconds the suite may take (estimated from one example); "
                                               "beyond it the suite is queued as its own evaluate job. 0 = no "
                                               "limit.", min=0),
        Option("explain_randomisation_threshold", float, 0.5, "Agreement with a re-initialised copy above which "
                                                              "the explanations are marked untrustworthy.",
               min=-1, max=1),
    ),
    description="attributions (IG / occlusion / KernelSHAP), faithfulness (AOPC), agreement with the parent's "
                "attributions on the same examples and the model-randomisation sanity check",
    metrics=(MetricSpec("explain_agreement", True), MetricSpec("explain_prediction_agreement", True), MetricSpec("explain_topk_overlap", True), MetricSpec("explain_comprehensiveness", True), MetricSpec("explain_sufficiency", False), MetricSpec("explain_examples", None), MetricSpec("explain_flips", None), MetricSpec("explain_randomisation_agreement", False),)))
register(Suite(
    "mc", "Multiple choice (log-likelihood)", "relman.evaluate.lm_mc:run", options=(_SPLIT, _EVAL_BS, _PAIRED),
    description="lm-eval's acc and acc_norm from local OpenCompass mcq JSONL or lm-eval task YAML, with 95 % "
                "intervals; paired deltas vs parent and production", data_kinds=("mcq",),
    metrics=(MetricSpec("mc_acc", True), MetricSpec("mc_chance", None), MetricSpec("mc_items", None)),))
register(Suite(
    "generate", "Greedy generation (exact match)", "relman.evaluate.lm_generate:run",
    options=(
        _SPLIT, _PAIRED,
        Option("gen_max_new_tokens", int, 16, "Most new tokens per prompt.", min=1, max=4096),
        Option("gen_stop_at_newline", bool, True, "Stop a generation at its first newline."),
        Option("gen_regex", str, "", "Take the answer as this pattern's first match in the output (its first "
                                     "group if it has one) before normalising; empty = the whole output."),
    ),
    description="normalised exact match of greedy answers from local question/answer items (or multiple-choice "
                "items: the right choice is the answer); every output stored; paired deltas and output agreement vs "
                "parent and production", data_kinds=("qa", "mcq"),
    metrics=(MetricSpec("generate_exact_match", True), MetricSpec("generate_agreement", True),
             MetricSpec("generate_items", None), MetricSpec("generate_new_tokens", None)),))
