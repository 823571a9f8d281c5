"""Explanations: why a version decides, and whether a compressed child decides for the same reasons.

- `attribute`  attribution methods (Captum) over the features of one example: tokens for text
               tasks, patches for images. `ig` (Integrated Gradients over the input embeddings /
               pixels) needs a differentiable PyTorch version; `occlusion` (feature ablation)
               and `shap` (KernelSHAP) need only the forward pass of the task adapter, so ONNX
               and torch-int8 children are explained by the same code evaluation uses.
- `compare`    agreement of two attributions (the `model` measure), top-k overlap.
- `sanity`     the model-randomisation check (Adebayo et al., 2018) on the version's own weights.
- `artifact`   the per-example attributions as a JSON document (stored as a blob).
- `suite`      the `explain` metric suite; `job` the "explain" job behind `relman explain`.

This package's `__init__` is data only (no numpy/torch), so the CLI and the GUI can name the
methods and check requests at start-up cost; the worker imports the rest.
"""

from __future__ import annotations

METHODS = ("ig", "occlusion", "shap", "lime", "attention")
METHOD_TITLES = {"ig": "Integrated Gradients", "occlusion": "occlusion (feature ablation)", "shap": "KernelSHAP",
                 "lime": "LIME", "attention": "attention rollout"}
# When to use which (the README's table says the same):
# - ig: PyTorch versions; gradients along a path from the baseline, complete (the scores add up
#   to the explained score's change), cheap for long inputs. The default where it can run.
# - occlusion: any version (forward pass only); one pass per feature; exact for what it asks
#   (the drop when one feature is removed) but blind to features that only matter together.
# - shap: any version; KernelSHAP over feature coalitions, captures interactions, seeded and
#   noisy with few samples (`shap_samples`).
# - lime: any version; a local linear surrogate fitted on random coalitions weighted by their
#   closeness to the input (Captum's Lime); cheap, seeded, less principled than SHAP.
# - attention: PyTorch transformers (text encoders, ViTs, GPT-2); attention rollout, one forward
#   pass, says where the model looks (non-negative, class-blind), not why; an alternative map.
# The tasks an explainer exists for, and what a feature is for each.
EXPLAINERS = {"text-classification": "tokens", "image-classification": "patches",
              "feature-extraction": "tokens", "causal-lm": "prompt tokens"}
DEFAULT_EXAMPLES = 32
# A compress job's automatic evaluation explains the child against its parent on this many
# examples when it can do so within the budget (estimated from one example); else the
# explain suite is queued as its own evaluate job (relman.evaluate.explain.suite).
AUTO_OPTIONS = {"explain_examples": 8, "explain_budget_s": 120.0}
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
