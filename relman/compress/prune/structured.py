"""Structured pruning: whole attention heads and feed-forward neurons removed, so the weight
matrices really shrink and parameters, file size and latency drop (unlike zeroed weights).

Importance is the weight norm: a head's squared L2 norm over its rows of Q, K, V and its
columns of the output projection; an FFN neuron's up-row norm times its down-column norm.
Each layer loses the same number of heads and of neurons (the least important of that
layer), because a Hugging Face config has a single `intermediate_size` for all layers. FFN
pruning is therefore expressed in the config alone (plain "hf" child); removed heads change
a BERT's projection shapes in a way no config expresses, so a child with heads removed is an
"hf-reshaped" folder (see relman.compress.surgery).

An optional short recovery fine-tune distils the parent into the pruned model on a dataset
(soft targets plus labels when present; embeddings for feature extractors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from relman.catalog import Metric
from relman.compress.adapt import training as tr
from relman.compress.adapt.distill import recover_by_distillation
from relman.compress.registry import ModelSource, RecipeOutput
from relman.compress.surgery import (
    current_surgery,
    is_linear_like,
    load_parent,
    merge_surgery,
    new_output_folder,
    save_child,
    unique_param_count,
)
from relman.errors import RecipeError
from relman.context import WorkContext


@dataclass
class AttentionBlock:
    path: str          # the module holding the projections (and the head attributes)
    q: str
    k: str
    v: str
    o: str
    head_dim: int
    heads: int
    kind: str          # "bert" or "proj"


@dataclass
class FfnBlock:
    up: str
    down: str


def find_attention(model: nn.Module) -> list[AttentionBlock]:
    blocks = []
    for name, m in model.named_modules():
        if all(hasattr(m, a) for a in ("query", "key", "value", "attention_head_size")):  # BERT family
            parent = name.rpartition(".")[0]
            query = _require_plain(model, f"{name}.query")
            blocks.append(AttentionBlock(name, f"{name}.query", f"{name}.key", f"{name}.value",
                                         f"{parent}.output.dense", int(m.attention_head_size),
                                         int(_w(query).shape[0] // m.attention_head_size), "bert"))
        elif all(hasattr(m, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim")):  # ViT & co.
            for a in ("q_proj", "k_proj", "v_proj", "o_proj"):
                _require_plain(model, f"{name}.{a}")
            if m.k_proj.out_features != m.q_proj.out_features:
                continue  # grouped-query attention: heads are shared, not removable one by one
            blocks.append(AttentionBlock(name, f"{name}.q_proj", f"{name}.k_proj", f"{name}.v_proj",
                                         f"{name}.o_proj", int(m.head_dim),
                                         int(m.q_proj.out_features // m.head_dim), "proj"))
    return blocks


def find_ffn(model: nn.Module) -> list[FfnBlock]:
    blocks = []
    for name, m in model.named_modules():
        inter, out = getattr(m, "intermediate", None), getattr(m, "output", None)
        if inter is not None and hasattr(inter, "dense") and out is not None and hasattr(out, "dense"):
            blocks.append(FfnBlock(f"{name}.intermediate.dense", f"{name}.output.dense"))  # BERT layer
        elif hasattr(m, "fc1") and hasattr(m, "fc2") and not hasattr(m, "q_proj"):
            blocks.append(FfnBlock(f"{name}.fc1", f"{name}.fc2"))  # ViT / CLIP MLP
        elif hasattr(m, "c_fc") and hasattr(m, "c_proj"):
            blocks.append(FfnBlock(f"{name}.c_fc", f"{name}.c_proj"))  # GPT-2 MLP (Conv1D)
    return blocks


# -- weight access that hides nn.Linear (out, in) vs Conv1D (in, out) ---------------------------
def _w(module: nn.Module) -> torch.Tensor:
    """(out, in) view of the weight."""
    return module.weight if isinstance(module, nn.Linear) else module.weight.t()


def _require_plain(model: nn.Module, path: str) -> nn.Module:
    module = model.get_submodule(path)
    if not is_linear_like(module):
        raise RecipeError(f"layer '{path}' is not a plain Linear layer (already factorised?); prune before "
                          "low-rank factorisation")
    return module


def _rebuild(module: nn.Module, *, keep_out: torch.Tensor | None = None, keep_in: torch.Tensor | None = None) -> nn.Module:
    """A copy of a Linear/Conv1D layer keeping only the given output rows / input columns."""
    w = _w(module).detach()
    b = module.bias.detach() if module.bias is not None else None
    if keep_out is not None:
        w = w[keep_out]
        b = b[keep_out] if b is not None else None
    if keep_in is not None:
        w = w[:, keep_in]
    out_f, in_f = w.shape
    if isinstance(module, nn.Linear):
        new = nn.Linear(in_f, out_f, bias=b is not None)
        new.weight.data.copy_(w)
    else:  # transformers Conv1D(nf=out, nx=in), weight stored (in, out)
        new = type(module)(out_f, in_f)
        new.weight.data.copy_(w.t())
    if b is not None:
        new.bias.data.copy_(b)
    return new.to(module.weight.device, module.weight.dtype)


def _set(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


# -- heads --------------------------------------------------------------------------------
def head_importance(model: nn.Module, block: AttentionBlock) -> torch.Tensor:
    d, h = block.head_dim, block.heads
    score = torch.zeros(h, dtype=torch.float64)
    for path in (block.q, block.k, block.v):
        w = _w(model.get_submodule(path)).detach().double()
        score += (w.reshape(h, d, -1) ** 2).sum(dim=(1, 2))
    wo = _w(model.get_submodule(block.o)).detach().double()
    score += (wo.reshape(wo.shape[0], h, d) ** 2).sum(dim=(0, 2))
    return score


def prune_heads(model: nn.Module, blocks: list[AttentionBlock], fraction: float) -> tuple[dict[str, Any], int]:
    """Remove the same number of least important heads in every block; (surgery, heads removed per layer)."""
    surgery: dict[str, Any] = {"linear": {}, "attrs": {}}
    n_remove = 0
    for block in blocks:
        n_remove = min(block.heads - 1, int(round(block.heads * fraction)))
        if n_remove <= 0:
            continue
        keep_heads = torch.sort(torch.topk(head_importance(model, block), block.heads - n_remove).indices).values
        d = block.head_dim
        rows = (keep_heads[:, None] * d + torch.arange(d)[None, :]).reshape(-1)
        for path in (block.q, block.k, block.v):
            new = _rebuild(_require_plain(model, path), keep_out=rows)
            _set(model, path, new)
            surgery["linear"][path] = [new.in_features, new.out_features, new.bias is not None]
        new_o = _rebuild(_require_plain(model, block.o), keep_in=rows)
        _set(model, block.o, new_o)
        surgery["linear"][block.o] = [new_o.in_features, new_o.out_features, new_o.bias is not None]
        kept = block.heads - n_remove
        attrs: dict[str, Any] = {"num_attention_heads": kept}
        if block.kind == "bert":
            attrs["all_head_size"] = kept * d
        module = model.get_submodule(block.path)
        for k, v in attrs.items():
            setattr(module, k, v)
        surgery["attrs"][block.path] = attrs
    return {k: v for k, v in surgery.items() if v}, n_remove


# -- FFN neurons --------------------------------------------------------------------------
def prune_ffn(model: nn.Module, blocks: list[FfnBlock], fraction: float) -> int:
    """Remove the same number of least important neurons in every block; returns the new width."""
    widths = {_w(model.get_submodule(b.up)).shape[0] for b in blocks}
    if len(widths) != 1:
        raise RecipeError(f"feed-forward widths differ between layers ({sorted(widths)}); a config can only "
                          "describe one width")
    width = widths.pop()
    keep = max(1, width - int(round(width * fraction)))
    for b in blocks:
        up, down = _require_plain(model, b.up), _require_plain(model, b.down)
        score = _w(up).detach().double().norm(dim=1) * _w(down).detach().double().norm(dim=0)
        idx = torch.sort(torch.topk(score, keep).indices).values
        _set(model, b.up, _rebuild(up, keep_out=idx))
        _set(model, b.down, _rebuild(down, keep_in=idx))
    cfg = model.config
    if getattr(cfg, "intermediate_size", None) is not None:
        cfg.intermediate_size = keep
    elif hasattr(cfg, "n_inner"):
        cfg.n_inner = keep
    else:
        raise RecipeError(f"don't know which config field holds the feed-forward width of a "
                          f"{cfg.model_type} model")
    return keep


def run(sources: list[ModelSource], params: dict[str, Any], ctx: WorkContext) -> RecipeOutput:
    source = sources[0]
    heads_fraction, ffn_fraction = float(params["heads"]), float(params["ffn"])
    if heads_fraction <= 0 and ffn_fraction <= 0:
        raise RecipeError("nothing to prune: set heads and/or ffn above 0")
    ctx.progress(0.05, "loading parent")
    model = load_parent(source, "cpu")
    before = unique_param_count(model)
    surgery = current_surgery(model)
    meta: dict[str, Any] = {"params_before": before}
    if heads_fraction > 0:
        blocks = find_attention(model)
        if not blocks:
            raise RecipeError(f"cannot remove attention heads from a {model.config.model_type} model "
                              "(supported: BERT-family and ViT-style attention); set heads=0 to prune only FFN neurons")
        ctx.progress(0.15, f"removing {heads_fraction:.0%} of the heads in {len(blocks)} layers")
        head_surgery, removed = prune_heads(model, blocks, heads_fraction)
        if head_surgery:
            surgery = merge_surgery(surgery, head_surgery)
        meta["heads_removed_per_layer"] = removed
        meta["heads_before_per_layer"] = blocks[0].heads
    if ffn_fraction > 0:
        ffn = find_ffn(model)
        if not ffn:
            raise RecipeError(f"cannot find the feed-forward layers of a {model.config.model_type} model; set ffn=0")
        ctx.progress(0.3, f"removing {ffn_fraction:.0%} of the feed-forward neurons in {len(ffn)} layers")
        meta["ffn_width_before"] = _w(model.get_submodule(ffn[0].up)).shape[0]
        meta["ffn_width_after"] = prune_ffn(model, ffn, ffn_fraction)
    after = unique_param_count(model)
    if after >= before:
        raise RecipeError("these settings remove nothing from this model (too few heads or neurons per layer)")
    metrics = []
    if params.get("dataset") and int(params["epochs"]) > 0:
        device = tr.resolve_device(ctx)
        parent = load_parent(source, device)
        losses = recover_by_distillation(model, parent, source, params, ctx, device)
        meta["recovery_epoch_losses"] = losses
        metrics.append(Metric("compress", "recovery_loss_last_epoch", losses[-1], {"epochs": len(losses)}))
    ctx.progress(0.92, "saving")
    out = new_output_folder(ctx, "prune-structured")
    fmt = save_child(model, source.folder, out, surgery)
    meta["params_after"] = after
    reduction = (before - after) / before
    metrics += [Metric("compress", "param_reduction_achieved", reduction, {"params_before": before,
                                                                           "params_after": after})]
    ctx.progress(1.0, f"{reduction:.1%} fewer parameters")
    return RecipeOutput(folder=out, format=fmt, params=after, dtype="float32", meta=meta, metrics=metrics)
