"""Federated averaging (FedAvg): the weighted mean of several versions of one architecture,
e.g. copies of a model fine-tuned at different sites on data that may not leave them.

Weights are the sample counts each copy was trained on: given as the `weights` parameter, or
read from each parent's recorded `train_samples` (the fine-tune recipe records it), or equal
when neither is known (the child's recipe says which). Tensors are averaged straight from the
safetensors files, so no model is instantiated; every parent must have exactly the same
tensor names and shapes and the same model type, otherwise the merge is refused naming the
first tensor that differs. Integer tensors (buffers) are not averaged: they must agree.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from relman.catalog import Metric
from relman.compress.registry import ModelSource, RecipeOutput
from relman.compress.surgery import WEIGHT_SUFFIXES, new_output_folder
from relman.errors import RecipeError
from relman.context import WorkContext


def weight_files(folder: Path) -> list[Path]:
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise RecipeError(f"{folder} has no .safetensors weights to merge")
    return files


def tensor_index(folder: Path) -> dict[str, tuple[str, tuple[int, ...], str]]:
    """name -> (file name, shape, dtype) without reading the data."""
    index = {}
    for f in weight_files(folder):
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():
                sl = st.get_slice(name)
                index[name] = (f.name, tuple(sl.get_shape()), str(sl.get_dtype()))
    return index


def check_compatible(sources: list[ModelSource]) -> dict[str, tuple[str, tuple[int, ...], str]]:
    """The first parent's tensor index, after checking every other parent matches it."""
    first = sources[0]
    ref_index = tensor_index(first.folder)
    ref_type = _model_type(first.folder)
    for other in sources[1:]:
        if other.format != first.format:
            raise RecipeError(f"cannot merge {other.version.ref} ({other.format}) with {first.version.ref} "
                              f"({first.format}): formats differ")
        other_type = _model_type(other.folder)
        if other_type != ref_type:
            raise RecipeError(f"cannot merge {other.version.ref} (model type {other_type}) with "
                              f"{first.version.ref} (model type {ref_type})")
        index = tensor_index(other.folder)
        missing = sorted(set(ref_index) - set(index))
        extra = sorted(set(index) - set(ref_index))
        if missing:
            raise RecipeError(f"cannot merge: tensor '{missing[0]}' of {first.version.ref} is missing from "
                              f"{other.version.ref} ({len(missing)} missing)")
        if extra:
            raise RecipeError(f"cannot merge: tensor '{extra[0]}' of {other.version.ref} is not in "
                              f"{first.version.ref} ({len(extra)} extra)")
        for name, (_, shape, _) in sorted(ref_index.items()):
            if index[name][1] != shape:
                raise RecipeError(f"cannot merge: tensor '{name}' has shape {list(index[name][1])} in "
                                  f"{other.version.ref} but {list(shape)} in {first.version.ref}")
    return ref_index


def _model_type(folder: Path) -> str | None:
    cfg = Path(folder) / "config.json"
    if not cfg.is_file():
        return None
    return json.loads(cfg.read_text(encoding="utf-8")).get("model_type")


def recorded_samples(source: ModelSource, ctx: WorkContext) -> float | None:
    value = source.version.meta.get("train_samples")
    if value is None:
        value = ctx.catalog.metric_values(source.version.id).get("train_samples")
    return float(value) if value is not None else None


def resolve_weights(sources: list[ModelSource], given: list[str], ctx: WorkContext) -> tuple[list[float], str]:
    if given:
        if len(given) != len(sources):
            raise RecipeError(f"'weights' has {len(given)} values for {len(sources)} parents; give one per parent")
        try:
            raw = [float(w) for w in given]
        except ValueError:
            raise RecipeError(f"'weights' must be numbers (sample counts), got {','.join(given)}") from None
        source = "param"
    else:
        counts = [recorded_samples(s, ctx) for s in sources]
        if all(c is not None for c in counts):
            raw, source = [float(c) for c in counts], "train_samples"  # type: ignore[arg-type]
        else:
            raw, source = [1.0] * len(sources), "equal"
    if any(w < 0 for w in raw) or sum(raw) <= 0:
        raise RecipeError(f"merge weights must be non-negative and not all zero, got {raw}")
    total = sum(raw)
    return [w / total for w in raw], source


def fedavg(sources: list[ModelSource], weights: list[float], index: dict[str, tuple[str, tuple[int, ...], str]],
           ctx: WorkContext) -> dict[str, dict[str, torch.Tensor]]:
    """file name -> {tensor name -> averaged tensor}, in the first parent's file layout."""
    handles = [{f.name: safe_open(str(f), framework="pt") for f in weight_files(s.folder)} for s in sources]
    other_index = [tensor_index(s.folder) for s in sources]
    out: dict[str, dict[str, torch.Tensor]] = {}
    for i, (name, (fname, _, _)) in enumerate(sorted(index.items())):
        tensors = [handles[k][other_index[k][name][0]].get_tensor(name) for k in range(len(sources))]
        ref = tensors[0]
        if ref.is_floating_point():
            acc = torch.zeros(ref.shape, dtype=torch.float64)
            for w, t in zip(weights, tensors):
                acc += w * t.double()
            merged = acc.to(ref.dtype)
        else:
            for k, t in enumerate(tensors[1:], start=1):
                if not torch.equal(t, ref):
                    raise RecipeError(f"cannot merge: integer tensor '{name}' differs between "
                                      f"{sources[0].version.ref} and {sources[k].version.ref}")
            merged = ref.clone()
        out.setdefault(fname, {})[name] = merged.contiguous()
        if i % 20 == 0:
            ctx.progress(0.1 + 0.7 * i / max(1, len(index)), f"averaging {name}")
    return out


def run(sources: list[ModelSource], params: dict[str, Any], ctx: WorkContext) -> RecipeOutput:
    if len(sources) < 2:
        raise RecipeError("merge-fedavg needs at least two parent versions")
    ctx.progress(0.02, "checking the parents match")
    index = check_compatible(sources)
    weights, weights_source = resolve_weights(sources, list(params["weights"]), ctx)
    merged = fedavg(sources, weights, index, ctx)
    out = new_output_folder(ctx, "merge-fedavg")
    for f in sorted(sources[0].folder.iterdir()):  # config, tokenizer ... of the first parent
        if f.is_file() and not f.name.endswith(WEIGHT_SUFFIXES):
            shutil.copyfile(f, out / f.name)
    index_file = sources[0].folder / "model.safetensors.index.json"
    if index_file.is_file():
        shutil.copyfile(index_file, out / index_file.name)
    for fname, tensors in merged.items():
        save_file(tensors, str(out / fname), metadata={"format": "pt"})
    ctx.progress(1.0, f"merged {len(sources)} versions")
    n_params = sum(t.numel() for tensors in merged.values() for t in tensors.values())
    dtypes = {str(t.dtype).replace("torch.", "") for ts in merged.values() for t in ts.values() if t.is_floating_point()}
    refs = [s.version.ref for s in sources]
    return RecipeOutput(
        folder=out, format=sources[0].format, params=n_params,
        dtype=dtypes.pop() if len(dtypes) == 1 else None,
        meta={"parents": refs, "parent_weights": weights, "weights_source": weights_source,
              "train_samples": _total_samples(sources, ctx)},
        metrics=[Metric("compress", "merged_parents", float(len(sources)),
                        {"weights": dict(zip(refs, weights)), "weights_source": weights_source})],
    )


def _total_samples(sources: list[ModelSource], ctx: WorkContext) -> float | None:
    counts = [recorded_samples(s, ctx) for s in sources]
    return sum(counts) if all(c is not None for c in counts) else None  # type: ignore[arg-type]
