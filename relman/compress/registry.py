"""The recipe registry: name → typed parameters + the module that implements it.

Registration is data (no import of the implementing module), so `relman recipes`, the GUI's
parameter form and the CLI's validation of `--param k=v` all work without torch. The worker
imports `module:function` only when the recipe runs. A new recipe = one new module plus one
`register(...)` call in `relman/compress/recipes.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from relman import targets
from relman.errors import RecipeError
from relman.evaluate.registry import MetricSpec
from relman.typed_params import TypedValue

if TYPE_CHECKING:
    from relman.catalog import Metric, VersionInfo


@dataclass(frozen=True)
class Param(TypedValue):
    """A recipe parameter (`relman compress ... --param name=value`).

    `shown_when` declares when the parameter applies at all: pairs (other parameter, the
    values under which this one is used), e.g. `(("method", ("lora",)),)` for LoRA's rank.
    The GUI's generated form hides a parameter that does not apply (so a full fine-tune does
    not offer LoRA fields) and `relman recipes` prints the condition; the value is still
    parsed and defaulted as usual, so the worker sees every parameter."""

    shown_when: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    error = RecipeError
    noun = "parameter"

    def applies(self, values: dict[str, Any]) -> bool:
        """Whether this parameter is used given the other parameters' (parsed) `values`; a
        condition on a parameter missing from `values` holds."""
        return all(name not in values or values[name] in allowed for name, allowed in self.shown_when)


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    target: str  # "module:function", imported in the worker only
    params: tuple[Param, ...] = ()
    input_formats: tuple[str, ...] = ("hf",)  # formats of the parent(s) it accepts
    tasks: tuple[str, ...] | None = None  # None = any task
    output_format: str = "hf"
    multi_parent: bool = False  # merge: several parents
    same_task: bool = False  # ensemble: every parent of one task and one label set
    description: str = ""
    # the child should behave like its parent (quantise, prune, export), so fidelity to it is a
    # fair gate (`when compressed`); distillation, fine-tuning and merges change behaviour on purpose
    compresses: bool = False
    # what the Hugging Face Hub calls the child's tie to its base (model cards' base_model_relation):
    # "quantized", "adapter", "merge" or "finetune"; None makes no claim
    hub_relation: str | None = None
    # the recipe reads the dataset's group column (fairness mitigation): refused at queue time without one
    needs_groups: bool = False

    def resolve_params(self, raw: dict[str, Any]) -> dict[str, Any]:
        known = {p.name: p for p in self.params}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise RecipeError(f"recipe '{self.name}' has no parameter {', '.join(unknown)} "
                              f"(it takes: {', '.join(known) or 'none'})")
        return {name: (p.parse(raw[name]) if name in raw else p.default) for name, p in known.items()}

    def check_parents(self, parents: Sequence["VersionInfo"]) -> None:
        """Refuse parents this recipe cannot take (count, format, task) before any work."""
        if not parents:
            raise RecipeError(f"recipe '{self.name}' needs a parent version")
        if len(parents) > 1 and not self.multi_parent:
            raise RecipeError(f"recipe '{self.name}' takes one parent, got {len(parents)} "
                              f"({', '.join(p.ref for p in parents)})")
        for p in parents:
            if p.format not in self.input_formats:
                raise RecipeError(f"recipe '{self.name}' cannot take {p.ref}: its format is '{p.format}', the recipe "
                                  f"accepts {', '.join(self.input_formats)}")
            if self.tasks is not None and p.task not in self.tasks:
                raise RecipeError(f"recipe '{self.name}' cannot take {p.ref}: its task is '{p.task or 'unknown'}', "
                                  f"the recipe is for {', '.join(self.tasks)}")
        if self.same_task:
            first = parents[0]
            for p in parents[1:]:
                if p.task != first.task:
                    raise RecipeError(f"recipe '{self.name}' cannot combine {p.ref} ({p.task or 'no task'}) with "
                                      f"{first.ref} ({first.task or 'no task'}): its parents must do one task")
                mine, theirs = p.meta.get("labels"), first.meta.get("labels")
                if mine is not None and theirs is not None and list(mine) != list(theirs):
                    raise RecipeError(f"recipe '{self.name}' cannot combine {p.ref} (labels {','.join(mine)}) with "
                                      f"{first.ref} (labels {','.join(theirs)}): its parents must share one label set")

    def groups_refusal(self, dataset: str | None, columns: dict[str, Any] | None) -> str | None:
        """Why this recipe cannot take `dataset` (None: it can), for recipes that need a group column."""
        if not self.needs_groups:
            return None
        if not dataset:
            return f"{self.name} needs a labelled dataset with a group column (--dataset NAME or -p dataset=NAME)"
        if not (columns or {}).get("group_col"):
            return (f"{self.name} needs a group column, but dataset '{dataset}' has none (register it with a "
                    "group column, e.g. --map group_col=COLUMN)")
        return None

    def describe(self) -> dict[str, Any]:
        """Plain data for `relman recipes --json` and the GUI's parameter form."""
        return {
            "name": self.name, "title": self.title, "description": self.description,
            "input_formats": list(self.input_formats), "tasks": list(self.tasks) if self.tasks else None,
            "output_format": self.output_format, "multi_parent": self.multi_parent, "compresses": self.compresses,
            "hub_relation": self.hub_relation,
            "params": [{"name": p.name, "type": p.type.__name__, "default": p.default, "help": p.help,
                        "choices": list(p.choices) if p.choices else None, "min": p.min, "max": p.max,
                        "shown_when": {name: list(allowed) for name, allowed in p.shown_when} or None}
                       for p in self.params],
        }

    def function(self) -> Callable[..., "RecipeOutput"]:
        fn: Callable[..., RecipeOutput] = targets.resolve(self.target)
        return fn


@dataclass
class ModelSource:
    """A parent version laid out on disk for a recipe to read."""

    version: "VersionInfo"
    folder: Path

    @property
    def task(self) -> str | None:
        return self.version.task

    @property
    def format(self) -> str:
        return self.version.format


@dataclass
class RecipeOutput:
    """What a recipe hands back: a folder to store as the child version."""

    folder: Path
    format: str
    params: int | None = None
    dtype: str | None = None
    task: str | None = None  # None: the first parent's (an encoder fine-tuned into a classifier changes it)
    extra_parents: list[int] = field(default_factory=list)  # version ids added to the lineage (merge-adapter's base)
    meta: dict[str, Any] = field(default_factory=dict)
    metrics: list["Metric"] = field(default_factory=list)


RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    if recipe.name in RECIPES:
        raise ValueError(f"recipe {recipe.name} registered twice")
    known = {p.name: p for p in recipe.params}
    for p in recipe.params:
        for other, allowed in p.shown_when:  # a typo here would hide a field for good
            if other not in known or other == p.name:
                raise ValueError(f"recipe {recipe.name}: parameter {p.name} is shown_when an unknown parameter {other}")
            for value in allowed:
                known[other].parse(value)
    RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> Recipe:
    _load_builtin()
    try:
        return RECIPES[name]
    except KeyError:
        raise RecipeError(f"unknown recipe '{name}' (known: {', '.join(sorted(RECIPES))})") from None


def all_recipes() -> Sequence[Recipe]:
    _load_builtin()
    return [RECIPES[k] for k in sorted(RECIPES)]


def _load_builtin() -> None:
    import relman.compress.recipes  # noqa: F401  (registers the built-in recipes; no torch import)


# What recipes themselves store about their child (suite "compress", "privacy"), and which way is
# better: declared here once, beside the suites' own (relman.evaluate.registry), for the GUI.
RECIPE_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("top1_agreement", True), MetricSpec("merge_agreement", True), MetricSpec("val_accuracy", True),
    MetricSpec("val_loss", False), MetricSpec("distill_", False), MetricSpec("recovery_loss", False),
    MetricSpec("max_abs_diff", False), MetricSpec("export_max_abs_diff", False), MetricSpec("merge_max_abs_diff", False),
    MetricSpec("fedavg_", False), MetricSpec("sparsity", True), MetricSpec("param_ratio", False),
    MetricSpec("param_reduction", True), MetricSpec("weight_bytes", False), MetricSpec("nonzero_params", False),
    MetricSpec("energy_kept", True), MetricSpec("privacy_epsilon", False), MetricSpec("trainable_params", None),
    MetricSpec("train_samples", None), MetricSpec("epochs_run", None), MetricSpec("layers_factorised", None),
    MetricSpec("quantized_layers", None), MetricSpec("merged_parents", None), MetricSpec("training_converged", True),
    MetricSpec("qat_recovered_fraction", True),
    MetricSpec("fit_demographic_parity", False), MetricSpec("fit_equalized_odds", False),
    MetricSpec("fit_accuracy", True),
)


def metric_direction(name: str) -> bool | None:
    """Whether metric `name` is better higher (True), lower (False) or neither/undeclared (None):
    the measuring suite's declaration first, then RECIPE_METRICS (longest prefix)."""
    from relman.evaluate.registry import higher_is_better

    declared = higher_is_better(name)
    if declared is not None:
        return declared
    matches = [m for m in RECIPE_METRICS if name.startswith(m.prefix)]
    return max(matches, key=lambda m: len(m.prefix)).higher_is_better if matches else None

