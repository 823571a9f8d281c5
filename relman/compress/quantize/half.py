"""Half precision: recipes "half" (PyTorch FP16 / BF16) and "onnx-fp16".

PyTorch: the weights are cast and saved as a Hugging Face folder whose config records the
dtype, so `from_pretrained` loads them as they are. BF16 keeps FP32's range (no overflow
risk) and is the GPU training/inference type of choice on Ampere and later; FP16 is what
older GPUs accelerate. Both halve the size; on a CPU they are mostly slower, which the
latency suite will show.

ONNX: onnxruntime ships onnxconverter-common's float16 converter
(`onnxruntime.transformers.float16`), so no extra package is needed. Inputs and outputs stay
float32 (Cast nodes at the edges) so the same feeds and adapters work; ops known to lose
accuracy or lack FP16 kernels stay float32 (the converter's default block list). The result
runs on the CPU provider too (that is how it is checked here), but it is the useful one on a
GPU.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from relman.compress.export.onnx_export import (ONNX_FILE, copy_side_files, input_names, onnx_check_inputs, onnx_source,
                                         onnx_weight_stats, output_diff, run_onnx, verification_inputs)
from relman.errors import RecipeError
from relman.tasks.specs import get_task


def half_torch(sources: list[Any], params: dict[str, Any], ctx: Any) -> Any:
    """Recipe "half": cast a Hugging Face model to float16 or bfloat16."""
    import torch

    from relman.catalog import Metric
    from relman.compress.registry import RecipeOutput
    from relman.modelio.loading import load_torch_model

    src = sources[0]
    task = src.task
    if not task:
        raise RecipeError(f"{src.version.ref} has no task recorded; re-import it with --task")
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[params["dtype"]]
    device = ctx.device if ctx.device.startswith("cuda") else "cpu"
    ctx.progress(0.1, "loading the parent")
    model = load_torch_model(src.folder, task, device, fmt=src.format).float().eval()
    names = input_names(model, task)
    checks = verification_inputs(model.config, task, names)
    spec = get_task(task, RecipeError)
    out_key = spec.output

    def outputs(m: Any, cast: Any) -> list[np.ndarray]:
        res = []
        with torch.inference_mode():
            for feed in checks:
                kwargs: dict[str, Any] = {}
                for k, v in feed.items():
                    t = torch.from_numpy(v).to(device)
                    kwargs[k] = t.to(cast) if t.is_floating_point() else t
                if spec.causal:
                    kwargs["use_cache"] = False
                res.append(m(**kwargs, return_dict=True)[out_key].float().cpu().numpy())
        return res

    refs = outputs(model, torch.float32)
    fp32_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    ctx.check_cancelled()
    ctx.progress(0.4, f"casting to {params['dtype']}")
    model = model.to(dtype)
    outs = outputs(model, dtype)
    diff = max(output_diff(o, r, f, task) for o, r, f in zip(outs, refs, checks))
    if not np.isfinite(diff):
        raise RecipeError(f"{src.version.ref} overflows in {params['dtype']} (non-finite outputs on test inputs); "
                          "try bfloat16, which keeps float32's range")
    ctx.check_cancelled()
    ctx.progress(0.7, "saving")
    out = ctx.workdir / "out"
    copy_side_files(src.folder, out)
    model.to("cpu").save_pretrained(str(out), safe_serialization=True)
    half_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return RecipeOutput(folder=out, format="hf", params=sum(p.numel() for p in model.parameters()),
                        dtype=params["dtype"], meta={"dtype": params["dtype"], "cast_on": device},
                        metrics=[Metric("compress", "max_abs_diff_vs_parent", diff,
                                        {"inputs": "random, 2 shapes", "device": device}),
                                 Metric("compress", "weight_bytes", float(half_bytes)),
                                 Metric("compress", "weight_bytes_ratio", half_bytes / fp32_bytes)])


def half_graph_streaming(onnx_in: Path, out: Path, op_block_list: list[str], ref: str) -> None:
    """onnxruntime's float16 converter on the weightless graph (its node and Cast decisions),
    then each weight it turned to float16 converted from the source's data file one at a time
    (relman.compress.export.onnx_stream): converting a loaded >2 GB graph failed in protobuf
    ("Failed to serialize proto", at 3.3x the weights, on a 0.5 B LM)."""
    import warnings

    import onnx
    from onnx.external_data_helper import uses_external_data
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16, convert_np_to_float16

    from relman.compress.export.onnx_export import all_tensors
    from relman.compress.export.onnx_stream import ModelWriter, TensorSource

    model = onnx.load(str(onnx_in), load_external_data=False)
    if not any(t.data_type == onnx.TensorProto.FLOAT for t in model.graph.initializer):
        raise RecipeError(f"{ref} has no float32 weights to convert (is it already quantised or half?)")
    from onnxruntime.transformers import float16

    # The converter reads each converted weight's values only to learn its shape
    # (`make_value_info_from_tensor` -> numpy_helper.to_array), which for external data means
    # loading it from a path relative to the working directory; the dims say the same, so for
    # this call the shape comes from them (the same value info, no weight read).
    by_values = float16.make_value_info_from_tensor
    float16.make_value_info_from_tensor = lambda t: onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kwargs: dict[str, Any] = {"keep_io_types": True}
            if op_block_list:
                kwargs["op_block_list"] = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(op_block_list))
            model = convert_float_to_float16(model, **kwargs)  # the weights' data_type changes, their bytes wait
    finally:
        float16.make_value_info_from_tensor = by_values
    source = TensorSource(Path(onnx_in))
    with ModelWriter(out) as writer:
        for t in all_tensors(model):
            if not uses_external_data(t):
                continue
            _, _, length = source.location(t)
            count = int(np.prod(t.dims)) if t.dims else 1
            if t.data_type == onnx.TensorProto.FLOAT16 and length in (None, 4 * count):  # float32 bytes still
                values = convert_np_to_float16(source.array(t, np.float32)).astype(np.float16)
                t.CopyFrom(writer.add(t.name, values))
            else:
                writer.copy(t, source)
        writer.save(model)


def half_onnx(sources: list[Any], params: dict[str, Any], ctx: Any) -> Any:
    """Recipe "onnx-fp16": float16 weights and compute, float32 inputs/outputs."""
    from relman.catalog import Metric
    from relman.compress.registry import RecipeOutput

    logging.getLogger("onnxruntime").setLevel(logging.WARNING)
    src = sources[0]
    task = src.task
    if not task:
        raise RecipeError(f"{src.version.ref} has no task recorded; re-import it with --task")
    from relman.compress.export import genai_export

    if genai_export.builder_wanted(src, params):
        if params["op_block_list"]:
            raise RecipeError("op_block_list applies to relman's float16 converter; with exporter 'genai' leave it "
                              "empty or use exporter=relman")
        return genai_export.export_with_genai(src, "fp16", {}, ctx)
    work = ctx.workdir / "onnx-fp16"
    work.mkdir(parents=True, exist_ok=True)
    ctx.progress(0.1, "exporting to ONNX" if src.format != "onnx" else "reading the ONNX graph")
    onnx_in, export_diff = onnx_source(src.folder, src.format, task, work, tolerance=float(params["export_tolerance"]))
    ctx.check_cancelled()
    ctx.progress(0.4, "converting to float16")
    out = ctx.workdir / "out"
    half_graph_streaming(Path(onnx_in), out, list(params["op_block_list"]), src.version.ref)
    copy_side_files(src.folder, out)
    ctx.check_cancelled()
    ctx.progress(0.8, "checking against the parent")
    checks = onnx_check_inputs(onnx_in, task, src.folder)
    try:
        outs = run_onnx(out / ONNX_FILE, checks)
    except Exception as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise RecipeError(f"the float16 graph does not run in onnxruntime ({first}); add the op to op_block_list") from e
    refs = run_onnx(onnx_in, checks)
    diff = max(output_diff(o, r, f, task) for o, r, f in zip(outs, refs, checks))
    if not np.isfinite(diff):
        raise RecipeError(f"{src.version.ref} overflows in float16 (non-finite outputs on test inputs)")
    n_params, nbytes, _ = onnx_weight_stats(out / ONNX_FILE)
    _, parent_bytes, _ = onnx_weight_stats(onnx_in)
    metrics = [Metric("compress", "max_abs_diff_vs_parent", diff, {"inputs": "random, 2 shapes"}),
               Metric("compress", "weight_bytes", float(nbytes)),
               Metric("compress", "weight_bytes_ratio", nbytes / parent_bytes if parent_bytes else None)]
    if export_diff is not None:
        metrics.append(Metric("compress", "export_max_abs_diff", export_diff))
    return RecipeOutput(folder=out, format="onnx", params=n_params, dtype="float16",
                        meta={"dtype": "float16", "io_types": "float32", "op_block_list": list(params["op_block_list"]) or "default"},
                        metrics=metrics)
