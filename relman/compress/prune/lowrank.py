"""Low-rank factorisation: a Linear layer W (out x in) replaced by B (out x r) · A (r x in)
from its truncated SVD, W ≈ U_r S_r V_r^T with B = U_r sqrt(S_r), A = sqrt(S_r) V_r^T.

The rank is either fixed (`rank`) or the smallest that keeps a share of the spectral energy
(`energy`: sum of the kept squared singular values over the total). A layer is factorised
only when r·(in + out) < in·out, i.e. when it actually saves parameters; the parameter saving
is predicted from those shapes before anything is written and checked against the saved child.
The child is an "hf-reshaped" folder (see relman.compress.surgery). Factorising costs
fidelity that a short optional recovery distillation from the parent (`dataset`, `epochs`)
mostly buys back.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from relman.catalog import Metric
from relman.compress.registry import ModelSource, RecipeOutput
from relman.compress.surgery import (
    current_surgery,
    is_linear_like,
    linear_weight,
    load_parent,
    lowrank_module,
    merge_surgery,
    new_output_folder,
    save_child,
    set_module,
    unique_param_count,
)
from relman.errors import RecipeError
from relman.context import WorkContext


def rank_for_energy(singular_values: torch.Tensor, energy: float) -> int:
    """Smallest r whose leading singular values hold `energy` of the total squared sum."""
    sq = singular_values.double() ** 2
    cumulative = torch.cumsum(sq, 0) / sq.sum().clamp_min(1e-30)
    return int(torch.searchsorted(cumulative, torch.tensor(energy, dtype=torch.float64)).item()) + 1


def saves_parameters(fin: int, fout: int, rank: int) -> bool:
    return rank * (fin + fout) < fin * fout


def max_useful_rank(fin: int, fout: int) -> int:
    """Largest rank that still saves parameters for a (fout x fin) layer."""
    return max(0, (fin * fout - 1) // (fin + fout))


def plan(model: nn.Module, rank: int, energy: float, exclude: list[str]) -> list[dict[str, Any]]:
    """Which layers get factorised at which rank, with their SVD (computed once)."""
    candidates = [(n, m) for n, m in model.named_modules()
                  if is_linear_like(m) and not any(x and x in n for x in exclude)]
    if not candidates:
        raise RecipeError(f"no Linear layer left to factorise after excluding {', '.join(exclude)}")
    if rank > 0:
        best = max(max_useful_rank(*_shape(m)) for _, m in candidates)
        if rank > best:
            raise RecipeError(f"rank {rank} is too large: it saves no parameters in any layer of this model "
                              f"(the largest useful rank is {best})")
    chosen = []
    for name, module in candidates:
        fin, fout = _shape(module)
        w = linear_weight(module).detach().double()
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        r = rank if rank > 0 else rank_for_energy(s, energy)
        r = min(r, s.numel())
        if not saves_parameters(fin, fout, r):
            continue
        kept = float((s[:r] ** 2).sum() / (s ** 2).sum().clamp_min(1e-30))
        chosen.append({"name": name, "in": fin, "out": fout, "rank": r, "energy_kept": kept,
                       "saved": fin * fout - r * (fin + fout), "u": u[:, :r], "s": s[:r], "vh": vh[:r]})
    if not chosen:
        raise RecipeError(f"no layer would get smaller at energy {energy:.3f}; lower `energy` or set a `rank`")
    return chosen


def _shape(module: nn.Module) -> tuple[int, int]:
    out_features, in_features = linear_weight(module).shape
    return int(in_features), int(out_features)


def factorise(model: nn.Module, chosen: list[dict[str, Any]]) -> dict[str, Any]:
    """Replace each chosen layer in place; returns the surgery record for the config."""
    lowrank: dict[str, list[Any]] = {}
    for c in chosen:
        old = model.get_submodule(c["name"])
        bias = old.bias is not None
        root = c["s"].sqrt()
        new = lowrank_module(c["in"], c["rank"], c["out"], bias)
        dtype = linear_weight(old).dtype
        with torch.no_grad():
            new[0].weight.copy_((root[:, None] * c["vh"]).to(dtype))
            new[1].weight.copy_((c["u"] * root[None, :]).to(dtype))
            if bias:
                new[1].bias.copy_(old.bias.detach())
        set_module(model, c["name"], new)
        lowrank[c["name"]] = [c["in"], c["rank"], c["out"], bias]
    return {"lowrank": lowrank}


def run(sources: list[ModelSource], params: dict[str, Any], ctx: WorkContext) -> RecipeOutput:
    source = sources[0]
    rank, energy, exclude = int(params["rank"]), float(params["energy"]), list(params["exclude"])
    ctx.progress(0.05, "loading parent")
    model = load_parent(source, "cpu")
    before = unique_param_count(model)
    ctx.progress(0.2, "singular value decompositions")
    chosen = plan(model, rank, energy, exclude)
    predicted_saved = sum(c["saved"] for c in chosen)
    ctx.progress(0.6, f"factorising {len(chosen)} layers")
    surgery = merge_surgery(current_surgery(model), factorise(model, chosen))
    after = unique_param_count(model)
    recovery: list[float] = []
    if params.get("dataset") and int(params.get("epochs", 0)) > 0:
        from relman.compress.adapt.distill import recover_by_distillation
        from relman.compress.adapt.training import resolve_device

        device = resolve_device(ctx)
        recovery = recover_by_distillation(model, load_parent(source, device), source, params, ctx, device)
    out = new_output_folder(ctx, "lowrank-svd")
    fmt = save_child(model, source.folder, out, surgery)
    predicted = predicted_saved / before
    achieved = (before - after) / before
    ctx.progress(1.0, f"{len(chosen)} layers factorised, {achieved:.1%} fewer parameters")
    layers = {c["name"]: {"rank": c["rank"], "energy_kept": round(c["energy_kept"], 5)} for c in chosen}
    return RecipeOutput(
        folder=out, format=fmt, params=after, dtype="float32",
        meta={"layers": layers, "params_before": before, "params_after": after,
              "param_reduction_predicted": predicted, "param_reduction_achieved": achieved,
              **({"recovery_epoch_losses": recovery} if recovery else {})},
        metrics=[Metric("compress", "param_reduction_predicted", predicted, {"rank": rank, "energy": energy}),
                 Metric("compress", "param_reduction_achieved", achieved, {"params_before": before,
                                                                          "params_after": after}),
                 Metric("compress", "layers_factorised", float(len(chosen)), {}),
                 Metric("compress", "energy_kept_min", min(c["energy_kept"] for c in chosen), {})],
    )
