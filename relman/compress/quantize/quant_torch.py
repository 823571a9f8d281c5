"""INT8 quantisation of Linear layers in PyTorch (recipe "torch-int8-dynamic").

Why torchao: torch.ao's eager `quantize_dynamic`, which this recipe used until torch 2.13,
is deprecated there (pytorch/ao#2259), and so are the qint8 tensors its state dict pickles
(pytorch#184982). torchao's int8 configs (`Int8DynamicActivationInt8WeightConfig`, or
`Int8WeightOnlyConfig` with activations="float") are the maintained replacement. Measured
beside the old path (benchmarks/README.md, "torch-int8 on torchao"): in eager mode on CPU they
are slower than fbgemm's fused dynamic kernels (MiniLM batch 1: 0.83 of FP32 vs 0.40) and
much closer to the parent (MiniLM embedding cosine 0.995 vs 0.932), as they quantise weights
per row and activations per token rather than per tensor with a reduced range.

Stored format "torch-int8", layout "int8-rowwise-v1" (relman.modelio.torch_int8): the
parent's Hugging Face folder without its weights, `int8_weights.safetensors` (int8 weights and
float32 scales as plain tensors, the rest of the state dict as it was) and `relman_int8.json`
(layer list, activation mode, versions). Versions written in the old torch.ao layout keep
loading through the format's legacy reader.
"""

from __future__ import annotations

from typing import Any

import torch

from relman.compress.export.onnx_export import copy_side_files, input_names, output_diff, verification_inputs
from relman.errors import RecipeError
from relman.tasks.specs import get_task
from relman.modelio.loading import load_torch_model
# the format's reader lives with the format (modelio); the recipe writes what it reads
from relman.modelio.torch_int8 import FORMAT, WEIGHTS_FILE, load_int8, plain_tensors, quantize_linears, write_spec



def _targets(model: torch.nn.Module, keep_float: list[str]) -> list[str]:
    """Every Linear except those whose qualified name contains an entry of `keep_float`."""
    return sorted(name for name, m in model.named_modules()
                  if isinstance(m, torch.nn.Linear) and not any(k and k in name for k in keep_float))


def _count_params(state: dict[str, torch.Tensor]) -> int:
    """Stored values (int8 weights, their scales, the float rest)."""
    return sum(v.numel() for v in state.values())


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
    targets = _targets(model, list(params["keep_float"]))
    if not targets:
        raise RecipeError(f"{src.version.ref} has no Linear layers left to quantise "
                          f"(keep_float={','.join(params['keep_float']) or 'none'})")
    activations = str(params.get("activations", "dynamic"))
    quantized = quantize_linears(model, targets, activations)
    outs = outputs(quantized)
    diff = max(output_diff(o, r, f, task) for o, r, f in zip(outs, refs, checks))
    ctx.check_cancelled()
    ctx.progress(0.7, "saving")
    out = ctx.workdir / "out"
    copy_side_files(src.folder, out)
    state = plain_tensors(quantized, targets)
    from safetensors.torch import save_file

    from relman.fsutil import disk_full_error

    partial = out / (WEIGHTS_FILE + ".partial")
    try:
        save_file(state, str(partial), metadata={"format": "pt", "relman": "torch-int8 int8-rowwise-v1"})
    except (RuntimeError, OSError) as e:
        full = disk_full_error(e, out)
        partial.unlink(missing_ok=True)
        if full:
            raise RecipeError(f"could not write the INT8 weights: {full}") from None
        raise
    partial.replace(out / WEIGHTS_FILE)
    write_spec(out, targets, activations)
    reloaded = load_int8(out, task)  # the stored form must load back and agree with what we measured
    again = outputs(reloaded)
    drift = max(output_diff(a, b, f, task) for a, b, f in zip(again, outs, checks))
    if drift > 1e-5:
        raise RecipeError(f"the saved torch-int8 model does not reload identically (drift {drift:.3g})")
    return RecipeOutput(folder=out, format=FORMAT, params=_count_params(state), dtype="int8",
                        meta={"quantized_layers": len(targets), "kept_float": list(params["keep_float"]),
                              "fp32_params": fp32_params, "activations": activations, "layout": "int8-rowwise-v1"},
                        metrics=[Metric("compress", "max_abs_diff_vs_parent", diff, {"inputs": "random, 2 shapes"}),
                                 Metric("compress", "quantized_layers", float(len(targets)))])
