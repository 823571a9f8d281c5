"""The model-randomisation sanity check (Adebayo et al., 2018, "Sanity Checks for Saliency
Maps"), on the version's own weights, in memory (worker-only: torch).

An explanation that barely changes when the model's weights are replaced by random ones is
explaining the input, not the model. The check re-initialises every parameter of the PyTorch
model (full re-initialisation: `reset_parameters()` of each module that has one, N(0, 0.02) for
parameters a module holds without one, e.g. a ViT's position embeddings), explains the same
examples with the same method and baseline, compares with the trained model's attributions
under the suite's agreement measure, and restores the trained weights. The result is stored
as `explain_randomisation_agreement` (lower is better); above `THRESHOLD` the version's
explain metrics are marked untrustworthy and gates refuse to pass on them.

Only a PyTorch version with float weights can be randomised (an ONNX graph or an INT8 model
cannot here); the suite then randomises the version it is compared with (its parent), whose
explanations the agreement is measured against.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

THRESHOLD = 0.5
INIT_STD = 0.02


def can_randomise(runner: Any) -> bool:
    from relman.evaluate.explain.attribute import differentiable

    return differentiable(runner)


@contextmanager
def randomised(runner: Any, seed: int = 0) -> Iterator[Any]:
    """The runner with its model's weights re-initialised (seeded); the trained weights are
    back when the block ends, whatever happens inside it."""

    model = runner.backend.model
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        reinitialise(model, seed)
        yield runner
    finally:
        model.load_state_dict(saved)


def reinitialise(model: Any, seed: int = 0) -> Any:
    """Every parameter of `model` re-initialised in place (seeded), as described above."""
    import torch

    with torch.no_grad():
        torch.manual_seed(int(seed))
        from relman.evaluate.explain.attribute import quantised_parameter

        for module in model.modules():
            if any(quantised_parameter(p) for p in module.parameters(recurse=False)):
                continue  # torchao int8 weights: left as they are, as torch.ao's quantised modules were
            if hasattr(module, "reset_parameters") and callable(module.reset_parameters):
                module.reset_parameters()
            else:
                for p in module.parameters(recurse=False):
                    p.normal_(0.0, INIT_STD)
    return model


def verdict(value: float | None, threshold: float = THRESHOLD) -> str | None:
    """Why the explanations are untrustworthy, or None when they pass the check."""
    if value is None:
        return None
    if value > threshold:
        return (f"explanations barely depend on the weights: agreement with a re-initialised copy is "
                f"{value:.2f} > {threshold:.2f} (model-randomisation check)")
    return None
