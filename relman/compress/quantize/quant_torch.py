"""Dynamic INT8 quantisation of Linear layers in PyTorch (recipe "torch-int8-dynamic").

Why torch.ao and not torchao: `torch.ao.quantization.quantize_dynamic` still works in torch
2.13 (deprecated, with a warning we silence) and needs nothing beyond torch, which matters on
an offline machine; torchao would be a new dependency for the same int8 Linear kernels.

Stored format "torch-int8": the parent's Hugging Face folder without its weights (config,
tokenizer / image processor) plus `quantized_state_dict.pt`, the quantised model's state
dict. A quantised module cannot be pickled safely, so the loader rebuilds the fp32
architecture from config.json, re-applies the same `quantize_dynamic` (the layer list is in
`relman_int8.json`), and loads the tensors with `torch.load(weights_only=True)`, strictly.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from relman.compress.export.onnx_export import copy_side_files, input_names, output_diff, verification_inputs
from relman.errors import RecipeError
from relman.tasks.specs import get_task
from relman.modelio.loading import load_torch_model
# the format's reader lives with the format (modelio); the recipe writes what it reads
from relman.modelio.torch_int8 import FORMAT, SPEC_FILE, STATE_FILE, load_int8, quantize_dynamic_layers  # noqa: F401



def _quantize(model: torch.nn.Module, keep_float: list[str]) -> tuple[torch.nn.Module, list[str]]:
    """Quantise every Linear except those whose qualified name contains an entry of
    `keep_float`; returns the model and the names of the quantised layers."""
    targets = {name for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and not any(k and k in name for k in keep_float)}
    return quantize_dynamic_layers(model, targets), sorted(targets)


def _count_params(state: dict[str, Any]) -> int:
    n = 0
    for value in state.values():
        if isinstance(value, torch.Tensor):
            n += value.numel()
        elif isinstance(value, tuple):
            n += sum(v.numel() for v in value if isinstance(v, torch.Tensor))
    return n


def int8_dynamic(sources: list[Any], params: dict[str, Any], ctx: Any) -> Any:
    """Recipe "torch-int8-dynamic"."""
    from relman.catalog import Metric
    from relman.compress.registry import RecipeOutput

    src = sources[0]
    task = src.task
    if not task:
        raise RecipeError(f"{src.version.ref} has no task recorded; re-import it with --task")
    if ctx.device.startswith("cuda"):
        ctx.log("dynamic INT8 kernels are CPU-only; quantising on the CPU")
    if src.format != "hf":
        raise RecipeError(f"recipe 'torch-int8-dynamic' needs a plain Hugging Face parent, {src.version.ref} is "
                          f"'{src.format}'")
    ctx.progress(0.1, "loading the parent")
    model = load_torch_model(src.folder, task, "cpu", fmt=src.format).float().eval()
    names = input_names(model, task)
    checks = verification_inputs(model.config, task, names)
    spec = get_task(task, RecipeError)
    out_key = spec.output

    def outputs(m: torch.nn.Module) -> list[Any]:
        with torch.inference_mode():
            res = []
            for feed in checks:
                kwargs = {k: torch.from_numpy(v) for k, v in feed.items()}
                if spec.causal:
                    kwargs["use_cache"] = False
                res.append(m(**kwargs, return_dict=True)[out_key].float().numpy())
            return res

    refs = outputs(model)
    fp32_params = sum(p.numel() for p in model.parameters())
    ctx.check_cancelled()
    ctx.progress(0.4, "quantising Linear layers")
    quantized, targets = _quantize(model, list(params["keep_float"]))
    if not targets:
        raise RecipeError(f"{src.version.ref} has no Linear layers left to quantise "
                          f"(keep_float={','.join(params['keep_float']) or 'none'})")
    outs = outputs(quantized)
    diff = max(output_diff(o, r, f, task) for o, r, f in zip(outs, refs, checks))
    ctx.check_cancelled()
    ctx.progress(0.7, "saving")
    out = ctx.workdir / "out"
    copy_side_files(src.folder, out)
    state = quantized.state_dict()
    from relman.fsutil import disk_full_error

    try:
        torch.save(state, str(out / (STATE_FILE + ".partial")))
    except (RuntimeError, OSError) as e:  # torch reports a full disk as "unexpected pos N vs M"
        full = disk_full_error(e, out)
        if full:
            raise RecipeError(f"could not write the INT8 state dict: {full}") from None
        raise
    (out / (STATE_FILE + ".partial")).replace(out / STATE_FILE)
    (out / SPEC_FILE).write_text(json.dumps({"quantized": targets, "dtype": "qint8",
                                             "torch": torch.__version__}, indent=2), encoding="utf-8")
    reloaded = load_int8(out, task)  # the stored form must load back and agree with what we measured
    again = outputs(reloaded)
    drift = max(output_diff(a, b, f, task) for a, b, f in zip(again, outs, checks))
    if drift > 1e-5:
        raise RecipeError(f"the saved torch-int8 model does not reload identically (drift {drift:.3g})")
    return RecipeOutput(folder=out, format=FORMAT, params=_count_params(state), dtype="int8",
                        meta={"quantized_layers": len(targets), "kept_float": list(params["keep_float"]),
                              "fp32_params": fp32_params},
                        metrics=[Metric("compress", "max_abs_diff_vs_parent", diff, {"inputs": "random, 2 shapes"}),
                                 Metric("compress", "quantized_layers", float(len(targets)))])
