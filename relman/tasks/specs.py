"""The task table: what each task is, in one place. Data only (no numpy, torch or transformers).

Everything that differs between tasks and is not model code reads this table: the adapter
registry (`relman.tasks.open_runner`), model loading (auto class, preprocessor), task guessing
at import, the backends' output tensor, the ONNX export (input names, dynamic axes), the
compression recipes (which task-specific recipes apply, image vs text inputs), the metric
suites (which suites apply, which need labels, the defaults with a dataset), `optimize`'s
quality measure, dataset-kind checks, the model card's pipeline tag, and the CLI's `--task`
choices. A new task is one adapter module plus one `register(TaskSpec(...))` entry below.

Because the CLI and GUI import this at start-up (to list tasks, validate `--task`, plan
evaluations), it must stay free of heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass

from relman.errors import RelmanError
from relman.modelio.loading import TaskModel, register_task_model


@dataclass(frozen=True)
class TaskSpec:
    name: str                      # the task id recorded on versions ("text-classification")
    title: str
    adapter: str                   # "module:Class" of its Runner (relman/tasks/<task>.py), worker-only
    auto_class: str                # transformers Auto* class that loads a Hugging Face folder of this task
    architecture_suffixes: tuple[str, ...]  # config.json `architectures[0]` endings that mean this task
    output: str                    # the model output the adapter reads (and the ONNX export's output name)
    modality: str                  # "text" (tokenizer, input_ids…) or "image" (image processor, pixel_values)
    data_kinds: tuple[str, ...]    # dataset kinds (relman.data.dataset.Kind) the adapter reads
    per_token_output: bool         # the output has a sequence axis (ONNX dynamic axis, padding masked)
    labels: str                    # "row": one class per row; "token": a tag per word; "none": unlabelled
    pipeline_tag: str              # Hugging Face pipeline tag for model cards
    suites: tuple[str, ...]        # metric suites that apply (relman.evaluate.registry)
    default_suites: tuple[str, ...] = ()  # added to size + latency when a dataset is given
    role: str = ""                 # what gate conditions call it: "classifier", "causal_lm", "embedder", "tagger"
    quality_metric: tuple[str, bool] | None = None  # (quality metric, higher is better) for `optimize`
    fidelity_metric: str = "agreement"  # the headline fidelity measure ("agreement" or "cosine")
    recipes: tuple[str, ...] = ()  # task-restricted recipes that apply (the others apply to every task)
    causal: bool = False           # decoder-only: no cache while scoring, no token_type_ids

    @property
    def classifies_rows(self) -> bool:
        """One class per row (the logits are N x classes): accuracy, fairness, fine-tuning."""
        return self.labels == "row"


TASKS: dict[str, TaskSpec] = {}

_BASE_SUITES = ("memory", "size", "latency", "fidelity")


def register(spec: TaskSpec) -> TaskSpec:
    if spec.name in TASKS:
        raise ValueError(f"task {spec.name} registered twice")
    TASKS[spec.name] = spec
    # model loading sits a layer below and reads what it needs from its own small registry
    register_task_model(spec.name, TaskModel(spec.auto_class, spec.modality, spec.architecture_suffixes))
    return spec


def task_names() -> list[str]:
    return list(TASKS)


def get_task(name: str | None, error: type[RelmanError] = RelmanError) -> TaskSpec:
    """The spec of `name`; `error` (e.g. EvaluationError) naming the known tasks otherwise."""
    try:
        return TASKS[name or ""]
    except KeyError:
        raise error(f"unknown task '{name}' (known: {', '.join(TASKS)})") from None


def find_task(name: str | None) -> TaskSpec | None:
    return TASKS.get(name or "")


def tasks_with_suite(suite: str) -> tuple[str, ...]:
    return tuple(t.name for t in TASKS.values() if suite in t.suites)


def tasks_with_recipe(recipe: str) -> tuple[str, ...]:
    return tuple(t.name for t in TASKS.values() if recipe in t.recipes)


register(TaskSpec(
    name="text-classification", role="classifier", title="Text classification",
    adapter="relman.tasks.text_classification:TextClassificationRunner",
    auto_class="AutoModelForSequenceClassification", architecture_suffixes=("ForSequenceClassification",),
    output="logits", modality="text", data_kinds=("text",), per_token_output=False, labels="row",
    pipeline_tag="text-classification", suites=_BASE_SUITES + ("quality", "robustness", "fairness", "explain"),
    default_suites=("quality",), quality_metric=("accuracy", True), recipes=("distill", "finetune", "ensemble"),
))
register(TaskSpec(
    name="image-classification", role="classifier", title="Image classification",
    adapter="relman.tasks.image_classification:ImageClassificationRunner",
    auto_class="AutoModelForImageClassification", architecture_suffixes=("ForImageClassification",),
    output="logits", modality="image", data_kinds=("image",), per_token_output=False, labels="row",
    pipeline_tag="image-classification", suites=_BASE_SUITES + ("quality", "robustness", "fairness", "explain"),
    default_suites=("quality",), quality_metric=("accuracy", True), recipes=("distill", "finetune", "ensemble"),
))
register(TaskSpec(
    name="feature-extraction", role="embedder", title="Feature extraction (sentence embeddings)",
    adapter="relman.tasks.feature_extraction:FeatureExtractionRunner",
    auto_class="AutoModel", architecture_suffixes=("Model",),
    output="last_hidden_state", modality="text", data_kinds=("text", "lm"), per_token_output=True,
    labels="none", pipeline_tag="feature-extraction", suites=_BASE_SUITES + ("explain",),
    fidelity_metric="cosine", recipes=("distill", "finetune"),  # finetune: an encoder becomes a classifier
))
register(TaskSpec(
    name="causal-lm", role="causal_lm", title="Causal language modelling",
    adapter="relman.tasks.causal_lm:CausalLMRunner",
    auto_class="AutoModelForCausalLM", architecture_suffixes=("ForCausalLM", "LMHeadModel"),
    output="logits", modality="text", data_kinds=("lm", "text", "mcq", "qa"), per_token_output=True, labels="none",
    pipeline_tag="text-generation", suites=_BASE_SUITES + ("quality", "explain", "mc", "generate"),
    default_suites=("quality",),
    quality_metric=("perplexity", False), recipes=("int4-weight-only", "gguf", "finetune"), causal=True,
))
register(TaskSpec(
    name="token-classification", role="tagger", title="Token classification (named entities)",
    adapter="relman.tasks.token_classification:TokenClassificationRunner",
    auto_class="AutoModelForTokenClassification", architecture_suffixes=("ForTokenClassification",),
    output="logits", modality="text", data_kinds=("tokens", "text", "lm"), per_token_output=True, labels="token",
    pipeline_tag="token-classification", suites=_BASE_SUITES + ("quality",), default_suites=("quality",),
    quality_metric=("entity_f1", True),
))
