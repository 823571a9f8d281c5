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

import importlib
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
class Suite:
    name: str
    title: str
    target: str  # "module:function", imported in the worker only
    dataset: str = "required"  # "required", "optional" or "none"
    needs_labels: bool = False
    needs_groups: bool = False
    needs_parent: bool = False
    options: tuple[Option, ...] = ()
    description: str = ""

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks this suite applies to: those whose entry in the task table lists it."""
        return tasks_with_suite(self.name)

    def needs_labels_for(self, task: str | None) -> bool:
        """Labels are needed unless the task is unlabelled (a causal LM's quality is perplexity)."""
        spec = find_task(task)
        return self.needs_labels and not (spec is not None and spec.labels == "none")

    def function(self) -> Callable[..., Any]:
        module, _, fn = self.target.partition(":")
        return getattr(importlib.import_module(module), fn)


SUITES: dict[str, Suite] = {}
# The order suites run in within one job: memory first, before anything else has loaded the
# model into this process, so its measurement of loading + inference is not disturbed.
ORDER = ("memory", "size", "latency", "quality", "fidelity", "robustness", "fairness")


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


_SPLIT = Option("split", str, "test", "Rows of this split when the dataset has a split column (else all rows).")
_EVAL_BS = Option("eval_batch_size", int, 32, "Batch size for quality / fidelity / robustness / fairness.",
                  min=1, max=4096)

register(Suite(
    "quality", "Task quality", "relman.evaluate.quality:run", needs_labels=True, options=(_SPLIT, _EVAL_BS),
    description="accuracy, macro-F1 and per-class precision/recall/F1; perplexity for causal LMs"))
register(Suite(
    "fidelity", "Fidelity to the parent", "relman.evaluate.fidelity:run", needs_parent=True,
    options=(_SPLIT, _EVAL_BS),
    description="top-1 agreement and KL(parent || version) of logits, or cosine of embeddings"))
register(Suite(
    "size", "Size on disk and parameters", "relman.evaluate.size:run", dataset="none",
    description="bytes on disk, size in MiB, parameter count"))
register(Suite(
    "memory", "Peak inference memory", "relman.evaluate.memory:run", dataset="optional",
    options=(Option("memory_batches", int, 3, "Inference batches run while memory is watched.", min=1),),
    description="peak RSS (CPU) or max allocated (CUDA) of loading the model and running it"))
register(Suite(
    "latency", "Latency and throughput", "relman.evaluate.latency:run", dataset="optional",
    options=(
        Option("warmup", int, 10, "Warm-up runs discarded before timing.", min=0),
        Option("min_samples", int, 200, "Timed runs per configuration (at least).", min=5),
        Option("time_budget_s", float, 20.0, "Stop a configuration after this long, even short of min_samples.",
               min=0.01),
    ),
    description="p50/p90/p95/p99 latency and throughput per batch size and sequence length"))
register(Suite(
    "robustness", "Robustness to perturbations", "relman.evaluate.robustness:run", needs_labels=True,
    options=(
        _SPLIT, _EVAL_BS,
        Option("seed", int, 0, "Seed of the perturbations."),
        Option("perturb_rate", float, 0.1, "Share of characters a text perturbation touches.", min=0, max=1),
        Option("noise_std", float, 0.1, "Gaussian image noise, as a fraction of the pixel range.", min=0),
        Option("brightness", float, 0.3, "Largest relative brightness change.", min=0, max=1),
        Option("shift_px", int, 1, "Largest image shift in pixels.", min=0),
        Option("fgsm_epsilon", float, 0.05, "FGSM step in normalised input units (PyTorch versions); 0 = off.",
               min=0),
    ),
    description="accuracy under seeded text/image perturbations (and FGSM) and the drop from clean"))
register(Suite(
    "fairness", "Fairness across groups", "relman.evaluate.fairness:run", needs_labels=True, needs_groups=True,
    options=(
        _SPLIT, _EVAL_BS,
        Option("positive_label", str, "", "The 'selected' class for selection rates (default: the second label "
                                          "of a binary model)."),
    ),
    description="per-group accuracy and selection rate, largest gap, demographic parity and equalized odds"))
