"""merge-adapter: fold a LoRA adapter into its base, giving an ordinary `hf` version.

W' = W + (alpha / r) B A for every adapted layer (PEFT's `merge_and_unload`), the adapter's head
kept. The merged model must compute what the adapter computes: the recipe compares both on
inputs of the right shape and refuses when the logits differ by more than `tolerance`; the
agreement and max difference are stored, and the child's automatic evaluation (fidelity against
its first parent, the adapter) measures agreement on the dataset too.

The adapter is merged into the base it is pinned to. A second parent may name that base
explicitly; any other version is refused: a different revision is the wrong base (peft#1567),
and a quantised or half-precision one cannot absorb a small low-rank update (the update is
smaller than the rounding step of most weights, so it is rounded away or the layer must be
de-quantised, which undoes the compression): merge into the float base, then quantise.
"""

from __future__ import annotations

from typing import Any

import torch

from relman.catalog import Metric
from relman.compress.adapt import privacy
from relman.compress.registry import ModelSource, RecipeOutput
from relman.compress.surgery import new_output_folder, save_child, unique_param_count
from relman.context import CatalogWork
from relman.errors import RecipeError
from relman.modelio import peft_adapter

QUANTISED_FORMATS = ("torch-int8", "onnx")
QUANTISING_RECIPES = ("torch-int8-dynamic", "ort-int8", "int4-weight-only", "half", "onnx-fp16")


def quantised_reason(source: ModelSource) -> str | None:
    v = source.version
    recipe = (v.recipe or {}).get("name")
    if v.format in QUANTISED_FORMATS or recipe in QUANTISING_RECIPES:
        return f"it is a quantised version (format {v.format}, made by {recipe or 'import'})"
    if v.dtype and v.dtype not in ("float32",):
        return f"its weights are {v.dtype}"
    return None


def check_target(adapter: ModelSource, target: ModelSource, pin: dict[str, Any]) -> None:
    reason = quantised_reason(target)
    if reason:
        raise RecipeError(f"cannot merge {adapter.version.ref} into {target.version.ref}: {reason}; adding the "
                          "low-rank update to rounded weights loses it (or de-quantises the layer). Merge into the "
                          f"float base {pin['base_ref']} and quantise the merged version instead")
    if target.version.manifest_sha256 != pin["base_manifest_sha256"]:
        raise RecipeError(f"cannot merge {adapter.version.ref} into {target.version.ref}: the adapter was trained on "
                          f"{pin['base_ref']} (manifest {pin['base_manifest_sha256'][:12]}), not on this version")


def probe_inputs(model: torch.nn.Module, task: str, n: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs of the right shape for the comparison: random token ids or pixels (seeded)."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    if task == "image-classification":
        size = int(getattr(cfg, "image_size", 224))
        return {"pixel_values": torch.randn(n, int(getattr(cfg, "num_channels", 3)), size, size, generator=g)}
    length = min(32, int(getattr(cfg, "max_position_embeddings", 32)))
    ids = torch.randint(0, int(cfg.vocab_size), (n, length), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def run(sources: list[ModelSource], params: dict[str, Any], ctx: CatalogWork) -> RecipeOutput:
    adapter = sources[0]
    if adapter.format != peft_adapter.FORMAT:
        raise RecipeError(f"merge-adapter merges a LoRA adapter: {adapter.version.ref} is '{adapter.format}' "
                          "(give the adapter first, optionally its base second)")
    if len(sources) > 2:
        raise RecipeError("merge-adapter takes the adapter and, optionally, the base to merge it into")
    pin = peft_adapter.read_pin(adapter.folder)
    if len(sources) == 2:
        check_target(adapter, sources[1], pin)
    base = ctx.catalog.get_version(peft_adapter.find_base(ctx.catalog, pin, adapter.version.ref).id)
    task = adapter.task or pin["task"]
    ctx.progress(0.1, f"loading {adapter.version.ref} on {base.ref}")
    peft_model = peft_adapter.load_peft(adapter.folder, task)
    unmerged = peft_model.get_base_model()
    inputs = probe_inputs(unmerged, task)
    with torch.no_grad():
        before = unmerged(**inputs).logits.float()
    ctx.progress(0.5, "merging")
    merged = peft_model.merge_and_unload()
    merged.eval()
    with torch.no_grad():
        after = merged(**inputs).logits.float()
    max_diff = float((before - after).abs().max())
    agreement = float((before.argmax(-1) == after.argmax(-1)).float().mean())
    tol = float(params["tolerance"])
    if max_diff > tol:
        raise RecipeError(f"the merged model's logits differ from the adapter's by {max_diff:.3g} > tolerance {tol:g}")
    out = new_output_folder(ctx, "merge-adapter")
    fmt = save_child(merged, peft_adapter.base_folder(adapter.folder, verify=False), out)
    context = {"compared_with": adapter.version.ref, "inputs": f"{len(next(iter(inputs.values())))} random rows",
               "base": base.ref}
    ctx.progress(1.0, f"merged (max |Δlogit| {max_diff:.2e})")
    metrics = [Metric("compress", "merge_max_abs_diff", max_diff, context),
               Metric("compress", "merge_agreement", agreement, context)]
    meta: dict[str, Any] = {"merged_adapter": adapter.version.ref, "base": base.ref,
                            "base_manifest_sha256": base.manifest_sha256, "merge_max_abs_diff": max_diff}
    ledger = adapter.version.meta.get("privacy")
    if ledger:  # merging is post-processing of the adapter: its guarantee carries over unchanged
        meta["privacy"] = {**ledger, "inherited_from": adapter.version.ref}
        if ledger.get("epsilon") is not None:
            metrics.append(privacy.metric(meta["privacy"]))
    for key in ("train_samples", "labels"):
        if key in adapter.version.meta:
            meta[key] = adapter.version.meta[key]
    return RecipeOutput(folder=out, format=fmt, params=unique_param_count(merged), dtype="float32", task=task,
                        extra_parents=[base.id], meta=meta, metrics=metrics)
