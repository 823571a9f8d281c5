"""Unstructured magnitude pruning: the smallest weights of the Linear layers set to zero.

Uses torch.nn.utils.prune (L1 magnitude), either over all selected layers at once (`global`:
layers that matter less lose more) or the same share in each layer (`layer`), then
`prune.remove` so the masks become plain zeros in ordinary weights: the child is a normal
Hugging Face folder of the parent's shape. It does not get smaller on disk (the zeros are
stored), which is why the achieved sparsity is recorded: it is what sparse kernels or a
compressing archive can exploit, and it is the knob the accuracy-aware search turns.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from relman.catalog import Metric
from relman.compress.registry import ModelSource, RecipeOutput
from relman.compress.surgery import is_linear_like, load_parent, new_output_folder, save_child, unique_param_count
from relman.errors import RecipeError
from relman.context import WorkContext


def prunable_layers(model: nn.Module, exclude: list[str]) -> list[tuple[str, nn.Module]]:
    """Linear-like layers whose qualified name contains none of the `exclude` substrings."""
    out = []
    for name, module in model.named_modules():
        if is_linear_like(module) and not any(x and x in name for x in exclude):
            out.append((name, module))
    return out


def linear_weight_data(module: nn.Module) -> torch.Tensor:
    return module.weight.detach()


def sparsity_of(tensors: list[torch.Tensor]) -> float:
    total = sum(t.numel() for t in tensors)
    zeros = sum(int((t == 0).sum()) for t in tensors)
    return zeros / total if total else 0.0


def prune_magnitude(model: nn.Module, sparsity: float, scope: str, exclude: list[str]) -> list[tuple[str, nn.Module]]:
    layers = prunable_layers(model, exclude)
    if not layers:
        raise RecipeError(f"no Linear layer left to prune after excluding {', '.join(exclude)}")
    if scope == "global":
        torch_prune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=torch_prune.L1Unstructured,
                                        amount=sparsity)
    else:
        for _, m in layers:
            torch_prune.l1_unstructured(m, "weight", amount=sparsity)
    for _, m in layers:
        torch_prune.remove(m, "weight")  # mask applied for good: weight is a plain Parameter again
    return layers


def run(sources: list[ModelSource], params: dict[str, Any], ctx: WorkContext) -> RecipeOutput:
    source = sources[0]
    sparsity = float(params["sparsity"])
    scope = params["scope"]
    exclude = list(params["exclude"])
    ctx.progress(0.05, "loading parent")
    model = load_parent(source, "cpu")
    ctx.progress(0.3, f"pruning {sparsity:.0%} of weights ({scope})")
    with torch.no_grad():
        layers = prune_magnitude(model, sparsity, scope, exclude)
    weights = [linear_weight_data(m) for _, m in layers]
    achieved = sparsity_of(weights)
    all_params = list({p.data_ptr(): p.detach() for p in model.parameters()}.values())
    total_sparsity = sparsity_of(all_params)
    per_layer = {name: round(sparsity_of([linear_weight_data(m)]), 4) for name, m in layers}
    ctx.progress(0.7, "saving")
    out = new_output_folder(ctx, "prune-magnitude")
    fmt = save_child(model, source.folder, out, surgery=getattr(model.config, "relman_surgery", None))
    n_params = unique_param_count(model)
    nonzero = int(sum(int((p != 0).sum()) for p in all_params))
    ctx.progress(1.0, f"sparsity {achieved:.1%}")
    return RecipeOutput(
        folder=out, format=fmt, params=n_params, dtype="float32",
        meta={"sparsity_target": sparsity, "sparsity_achieved": achieved, "scope": scope,
              "layers_pruned": len(layers), "per_layer_sparsity": per_layer},
        metrics=[Metric("compress", "sparsity", achieved, {"scope": scope, "target": sparsity,
                                                           "layers": len(layers)}),
                 Metric("compress", "sparsity_total", total_sparsity, {}),
                 Metric("compress", "nonzero_params", float(nonzero), {})],
    )
