"""Explanations: why a version decides, and whether a compressed child decides for the same reasons.

- `attribute`  attribution methods (Captum) over the features of one example: tokens for text
               tasks, patches for images. `ig` (Integrated Gradients over the input embeddings /
               pixels) needs a differentiable PyTorch version; `occlusion` (feature ablation)
               and `shap` (KernelSHAP) need only the forward pass of the task adapter, so ONNX
               and torch-int8 children are explained by the same code evaluation uses.
- `compare`    rank agreement of two attributions, top-k overlap, AOPC faithfulness.
- `artifact`   the per-example attributions as a JSON document (stored as a blob).
- `suite`      the `explain` metric suite; `job` the "explain" job behind `relman explain`.

This package's `__init__` is data only (no numpy/torch), so the CLI and the GUI can name the
methods and check requests at start-up cost; the worker imports the rest.
"""

from __future__ import annotations

METHODS = ("ig", "occlusion", "shap")
METHOD_TITLES = {"ig": "Integrated Gradients", "occlusion": "occlusion (feature ablation)", "shap": "KernelSHAP"}
# The tasks an explainer exists for, and what a feature is for each.
EXPLAINERS = {"text-classification": "tokens", "image-classification": "patches",
              "feature-extraction": "tokens", "causal-lm": "prompt tokens"}
DEFAULT_EXAMPLES = 32
ARTIFACT_KIND = "attributions"
FORMAT = "relman-attributions/1"


def check_task(task: str | None, ref: str) -> None:
    """A one-line refusal for a version whose task has no explainer."""
    from relman.errors import EvaluationError

    if task not in EXPLAINERS:
        raise EvaluationError(f"no explainer for task '{task or 'unknown'}' of {ref} (explainers exist for "
                              f"{', '.join(EXPLAINERS)})")


def check_method(method: str) -> str:
    from relman.errors import EvaluationError

    if method not in METHODS + ("auto",):
        raise EvaluationError(f"unknown attribution method '{method}' (use {', '.join(METHODS)} or auto)")
    return method
