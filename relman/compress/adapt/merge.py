"""Federated averaging (FedAvg): the weighted mean of several versions of one architecture,
e.g. copies of a model fine-tuned at different sites on data that may not leave them.

Weights are the sample counts each copy was trained on: given as the `weights` parameter, or
read from each parent's recorded `train_samples` (the fine-tune recipe records it), or equal
when neither is known (the child's recipe says which). Tensors are averaged straight from the
safetensors files, so no model is instantiated; every parent must have exactly the same
tensor names and shapes and the same model type, otherwise the merge is refused naming the
first tensor that differs. Integer tensors (buffers) are not averaged: they must agree.

LoRA adapters of one base (`peft-adapter`, same base manifest, r, alpha, target modules and
head) are merged by averaging each layer's update ΔW = B A (weighted) and re-factorising the
average to rank r by truncated SVD (`adapter_rank` overrides r; alpha is scaled so alpha / r is
unchanged). Why not average A and B separately: the mean of products is not the product of
means (mean(B) mean(A) = mean(B A) only when the sites' A or B agree), so averaging the factors
merges an update no site proposed; averaging ΔW is exactly FedAvg of the composed models, and
the SVD truncation is the best rank-r approximation of it (Eckart-Young). Both errors are
recorded per merge: `fedavg_svd_residual` (relative Frobenius error of the rank-r
re-factorisation) and `fedavg_factor_average_error` (the same for the A/B average).

Secure aggregation (`masked`: the sites' masked update files, relman.compress.adapt.secagg):
the one parent is the adapters' base; the files' sum is the weighted sum of the updates B A and
of the example counts, so the merge is the same FedAvg without any site's update or weight
being seen (only `fedavg_factor_average_error` cannot be computed: no site's factors are known).

Privacy: the parents' ledgers compose in parallel (relman.compress.adapt.privacy); mixing DP and
non-DP parents is refused unless `allow_mixed_privacy`.
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
from relman.compress.adapt import privacy
from relman.compress.registry import ModelSource, RecipeOutput
from relman.compress.surgery import WEIGHT_SUFFIXES, new_output_folder
from relman.errors import RecipeError
from relman.context import CatalogWork, WorkContext


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


def recorded_samples(source: ModelSource, ctx: CatalogWork) -> float | None:
    value = source.version.meta.get("train_samples")
    if value is None:
        value = ctx.catalog.metric_values(source.version.id).get("train_samples")
    return float(value) if value is not None else None


def resolve_weights(sources: list[ModelSource], given: list[str], ctx: CatalogWork) -> tuple[list[float], str]:
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


def run(sources: list[ModelSource], params: dict[str, Any], ctx: CatalogWork) -> RecipeOutput:
    if params.get("masked"):
        return merge_masked(sources, params, ctx)
    if len(sources) < 2:
        raise RecipeError("merge-fedavg needs at least two parent versions")
    refs = [s.version.ref for s in sources]
    composed = privacy.compose_parallel(
        [s.version.meta.get("privacy") if (s.version.meta.get("privacy") or {}).get("epsilon") is not None else None
         for s in sources], refs, allow_mixed=bool(params.get("allow_mixed_privacy")))
    adapters = [s for s in sources if s.format == "peft-adapter"]
    if adapters and len(adapters) != len(sources):
        raise RecipeError(f"cannot merge LoRA adapters with full versions ({', '.join(refs)}): merge the adapters, "
                          "or merge-adapter them into their base first")
    ctx.progress(0.02, "checking the parents match")
    weights, weights_source = resolve_weights(sources, list(params["weights"]), ctx)
    if adapters:
        output = merge_adapters(sources, weights, int(params.get("adapter_rank") or 0), ctx)
    else:
        index = check_compatible(sources)
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
        n_params = sum(t.numel() for tensors in merged.values() for t in tensors.values())
        dtypes = {str(t.dtype).replace("torch.", "") for ts in merged.values() for t in ts.values()
                  if t.is_floating_point()}
        output = RecipeOutput(folder=out, format=sources[0].format, params=n_params,
                              dtype=dtypes.pop() if len(dtypes) == 1 else None)
    ctx.progress(1.0, f"merged {len(sources)} versions")
    output.meta.update({"parents": refs, "parent_weights": weights, "weights_source": weights_source,
                        "train_samples": _total_samples(sources, ctx)})
    output.metrics.append(Metric("compress", "merged_parents", float(len(sources)),
                                 {"weights": dict(zip(refs, weights)), "weights_source": weights_source}))
    if composed is not None:
        output.meta["privacy"] = composed
        if composed.get("epsilon") is not None:
            output.metrics.append(privacy.metric(composed))
    return output


# -- LoRA adapters ------------------------------------------------------------------------------
def _adapter_parts(source: ModelSource) -> tuple[dict[str, Any], dict[str, Any], dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    from relman.modelio import peft_adapter

    pin = peft_adapter.check_adapter_folder(source.folder)
    cfg = peft_adapter.check_peft_config(source.folder / peft_adapter.PEFT_CONFIG)
    return pin, cfg, load_file(str(source.folder / peft_adapter.WEIGHTS))


def check_adapters(sources: list[ModelSource]) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, torch.Tensor]]]:
    parts = [_adapter_parts(s) for s in sources]
    pin0, cfg0, t0 = parts[0]
    first = sources[0].version.ref
    for s, (pin, cfg, tensors) in zip(sources[1:], parts[1:]):
        if pin["base_manifest_sha256"] != pin0["base_manifest_sha256"]:
            raise RecipeError(f"cannot merge adapters of different bases: {first} adapts {pin0['base_ref']}, "
                              f"{s.version.ref} adapts {pin['base_ref']}")
        for key in ("r", "lora_alpha", "target_modules", "modules_to_save"):
            a, b = cfg0.get(key), cfg.get(key)
            if (sorted(a) if isinstance(a, list) else a) != (sorted(b) if isinstance(b, list) else b):
                raise RecipeError(f"cannot merge adapters with different {key}: {a} in {first}, {b} in {s.version.ref}")
        if (pin.get("config_overrides") or {}) != (pin0.get("config_overrides") or {}) or pin["task"] != pin0["task"]:
            raise RecipeError(f"cannot merge adapters with different heads (labels): {first} and {s.version.ref}")
        if set(tensors) != set(t0) or any(tensors[k].shape != t0[k].shape for k in t0):
            raise RecipeError(f"cannot merge: the adapter tensors of {s.version.ref} differ from {first}'s")
    return parts


def lora_pairs(names: list[str]) -> list[tuple[str, str]]:
    """(A name, B name) of each adapted layer: PEFT's lora_A/lora_B (or lora_embedding_A/B)."""
    pairs = []
    for name in sorted(names):
        for a_tag, b_tag in ((".lora_A.", ".lora_B."), (".lora_embedding_A", ".lora_embedding_B")):
            if a_tag in name:
                other = name.replace(a_tag, b_tag)
                if other not in names:
                    raise RecipeError(f"adapter tensor {name} has no matching {other}")
                pairs.append((name, other))
    return pairs


def average_update(As: list[torch.Tensor], Bs: list[torch.Tensor], weights: list[float],
                   rank: int) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """The weighted mean of B_k A_k re-factorised to `rank` by SVD: (A', B', relative residual of
    the SVD truncation, relative error of averaging the factors instead)."""
    a_shape, b_shape = As[0].shape, Bs[0].shape
    mats = [(b.double().reshape(b_shape[0], -1) @ a.double().reshape(a_shape[0], -1)) for a, b in zip(As, Bs)]
    avg = sum(w * m for w, m in zip(weights, mats))
    norm = float(torch.linalg.norm(avg)) or 1.0
    a_out, b_out, residual = refactorise(avg, rank, tuple(a_shape), tuple(b_shape), As[0].dtype)
    a_bar = sum(w * a.double().reshape(a_shape[0], -1) for w, a in zip(weights, As))
    b_bar = sum(w * b.double().reshape(b_shape[0], -1) for w, b in zip(weights, Bs))
    factor_error = float(torch.linalg.norm(avg - b_bar @ a_bar)) / norm
    return a_out, b_out, residual, factor_error


def refactorise(avg: torch.Tensor, rank: int, a_shape: tuple[int, ...], b_shape: tuple[int, ...],
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The best rank-`rank` factors (A', B') of the mean update `avg` (out x in, float64) by
    truncated SVD, in the parents' A / B shapes, and the relative residual of the truncation."""
    norm = float(torch.linalg.norm(avg)) or 1.0
    u, s, vh = torch.linalg.svd(avg, full_matrices=False)
    k = min(rank, s.numel())
    root = s[:k].sqrt()
    b_new = u[:, :k] * root
    a_new = root[:, None] * vh[:k]
    residual = float(torch.linalg.norm(avg - b_new @ a_new)) / norm
    if k < rank:  # pad with zero directions so the stored rank is what the config says
        a_new = torch.cat([a_new, a_new.new_zeros(rank - k, a_new.shape[1])])
        b_new = torch.cat([b_new, b_new.new_zeros(b_new.shape[0], rank - k)], dim=1)
    a_out = a_new.reshape((rank, *a_shape[1:])).to(dtype).contiguous()
    b_out = b_new.reshape((b_shape[0], rank, *b_shape[2:])).to(dtype).contiguous()
    return a_out, b_out, residual


def merge_adapters(sources: list[ModelSource], weights: list[float], rank: int, ctx: CatalogWork) -> RecipeOutput:
    from relman.modelio import peft_adapter

    parts = check_adapters(sources)
    pin, cfg, first = parts[0]
    r = int(cfg["r"])
    rank = rank or r
    names = list(first)
    pairs = lora_pairs(names)
    paired = {n for p in pairs for n in p}
    merged: dict[str, torch.Tensor] = {}
    residuals, factor_errors = [], []
    for i, (a_name, b_name) in enumerate(pairs):
        a, b, res, ferr = average_update([p[2][a_name] for p in parts], [p[2][b_name] for p in parts], weights, rank)
        merged[a_name], merged[b_name] = a, b
        residuals.append(res)
        factor_errors.append(ferr)
        ctx.progress(0.1 + 0.7 * i / max(1, len(pairs)), f"averaging {a_name.rsplit('.lora', 1)[0]}")
    for name in names:  # the head and any other saved module: plain weighted average
        if name in paired:
            continue
        ts = [p[2][name] for p in parts]
        if ts[0].is_floating_point():
            merged[name] = sum(w * t.double() for w, t in zip(weights, ts)).to(ts[0].dtype).contiguous()
        else:
            merged[name] = ts[0].clone()
    out = new_output_folder(ctx, "merge-fedavg")
    save_file(merged, str(out / peft_adapter.WEIGHTS), metadata={"format": "pt"})
    alpha = float(cfg["lora_alpha"]) * rank / r
    new_cfg = dict(cfg, r=rank, lora_alpha=alpha)
    (out / peft_adapter.PEFT_CONFIG).write_text(json.dumps(new_cfg, indent=2, sort_keys=True), encoding="utf-8")
    new_pin = dict(pin, r=rank, lora_alpha=alpha)
    (out / peft_adapter.PIN).write_text(json.dumps(new_pin, indent=2, sort_keys=True), encoding="utf-8")
    peft_adapter.check_adapter_folder(out)
    worst = max(residuals) if residuals else 0.0
    ctx.log("adapter FedAvg: %d layers, SVD residual max %.3g, factor-average error max %.3g", len(pairs), worst,
            max(factor_errors) if factor_errors else 0.0)
    context = {"layers": len(pairs), "rank": rank, "parents_rank": r, "statistic": "max over layers"}
    base = peft_adapter.find_base(ctx.catalog, pin, sources[0].version.ref)
    return RecipeOutput(
        folder=out, format=peft_adapter.FORMAT, params=sum(t.numel() for t in merged.values()), dtype="float32",
        extra_parents=[base.id],  # the base in the lineage too: housekeeping keeps a base its adapters pin
        meta={"adapter": {k: new_pin.get(k) for k in ("base_version_id", "base_ref", "base_manifest_sha256",
                                                      "base_format", "r", "lora_alpha", "target_modules",
                                                      "modules_to_save")},
              "fedavg_method": "mean of B A per layer, re-factorised by truncated SVD"},
        metrics=[Metric("compress", "fedavg_svd_residual", worst, context),
                 Metric("compress", "fedavg_factor_average_error", max(factor_errors) if factor_errors else 0.0,
                        context)],
    )


def _total_samples(sources: list[ModelSource], ctx: CatalogWork) -> float | None:
    counts = [recorded_samples(s, ctx) for s in sources]
    return sum(counts) if all(c is not None for c in counts) else None  # type: ignore[arg-type]


# -- secure aggregation: masked updates -----------------------------------------------------------
def merge_masked(sources: list[ModelSource], params: dict[str, Any], ctx: WorkContext) -> RecipeOutput:
    """FedAvg of a complete round of masked adapter updates onto the one parent, their base."""
    from relman.compress.adapt import secagg
    from relman.modelio import peft_adapter

    paths = [Path(p) for p in params["masked"]]
    if len(sources) != 1 or sources[0].format == peft_adapter.FORMAT:
        raise RecipeError("a merge of masked updates takes one parent: the base the sites' adapters adapt")
    if list(params.get("weights") or []):
        raise RecipeError("'weights' cannot be given with masked updates: each site masked its own example count")
    relative = [str(p) for p in paths if not p.is_absolute()]
    if relative:
        raise RecipeError(f"masked update paths must be absolute (the merge runs in a worker): {relative[0]}")
    base = sources[0].version
    ctx.progress(0.02, "checking the round")
    headers, sums, total = secagg.unmask_sum(paths)
    first = headers[0]
    pin = first["pin"]
    if pin["base_manifest_sha256"] != base.manifest_sha256:
        raise RecipeError(f"the masked updates adapt {pin['base_ref']} (manifest {pin['base_manifest_sha256'][:12]}), "
                          f"not {base.ref}")
    sites = [f"{h['site_name']} ({h['site']})" for h in headers]
    composed = privacy.compose_parallel([h.get("privacy") if (h.get("privacy") or {}).get("epsilon") is not None
                                         else None for h in headers], sites,
                                        allow_mixed=bool(params.get("allow_mixed_privacy")))
    cfg = first["peft_config"]
    r = int(cfg["r"])
    rank = int(params.get("adapter_rank") or 0) or r
    merged: dict[str, torch.Tensor] = {}
    residuals = []
    paired = set()
    for i, (a_name, b_name, a_shape, b_shape) in enumerate(first["pairs"]):
        avg = torch.from_numpy(sums[a_name] / total)
        a, b, res = refactorise(avg, rank, tuple(a_shape), tuple(b_shape), torch.float32)
        merged[a_name], merged[b_name] = a, b
        residuals.append(res)
        paired.update((a_name, b_name))
        ctx.progress(0.1 + 0.7 * i / max(1, len(first["pairs"])), f"averaging {a_name.rsplit('.lora', 1)[0]}")
    for name, value in sums.items():
        if name not in paired:
            merged[name] = torch.from_numpy(value / total).to(torch.float32).contiguous()
    out = new_output_folder(ctx, "merge-fedavg")
    save_file(merged, str(out / peft_adapter.WEIGHTS), metadata={"format": "pt"})
    alpha = float(cfg["lora_alpha"]) * rank / r
    (out / peft_adapter.PEFT_CONFIG).write_text(json.dumps(dict(cfg, r=rank, lora_alpha=alpha), indent=2,
                                                           sort_keys=True), encoding="utf-8")
    new_pin = dict(pin, r=rank, lora_alpha=alpha, base_version_id=base.id, base_ref=base.ref)
    (out / peft_adapter.PIN).write_text(json.dumps(new_pin, indent=2, sort_keys=True), encoding="utf-8")
    peft_adapter.check_adapter_folder(out)
    worst = max(residuals) if residuals else 0.0
    ctx.log("secure-aggregation FedAvg: %d sites, round %s, %d layers, SVD residual max %.3g", len(headers),
            first["round"], len(first["pairs"]), worst)
    ctx.progress(1.0, f"merged {len(headers)} masked updates")
    context = {"layers": len(first["pairs"]), "rank": rank, "parents_rank": r, "statistic": "max over layers"}
    weights_source = "equal" if first["weight_mode"] == "equal" else "masked example counts"
    meta: dict[str, Any] = {
        "adapter": {k: new_pin.get(k) for k in ("base_version_id", "base_ref", "base_manifest_sha256", "base_format",
                                                "r", "lora_alpha", "target_modules", "modules_to_save")},
        "fedavg_method": "mean of B A per layer, re-factorised by truncated SVD",
        "secure_aggregation": {"scheme": secagg.FORMAT, "round": first["round"], "roster_sha256": first["roster_sha256"],
                               "sites": sites, "drop_out_rule": "round refused",
                               "weights": "each site masked n_k (B A)_k and n_k; only the total is known"},
        "parents": [base.ref], "parent_weights": None, "weights_source": weights_source,
        "train_samples": None if first["weight_mode"] == "equal" else total}
    metrics = [Metric("compress", "fedavg_svd_residual", worst, context),
               Metric("compress", "merged_parents", float(len(headers)),
                      {"sites": sites, "weights_source": weights_source, "secure_aggregation": True})]
    if composed is not None:
        meta["privacy"] = composed
        if composed.get("epsilon") is not None:
            metrics.append(privacy.metric(composed))
    return RecipeOutput(folder=out, format=peft_adapter.FORMAT, params=sum(t.numel() for t in merged.values()),
                        dtype="float32", meta=meta, metrics=metrics)
