"""Recipe "onnx-export": which converter writes the parent's ONNX folder.

The GenAI builder (relman.compress.export.genai_export) for the LLM families it knows, relman's
own torch.onnx exporter (relman.compress.export.onnx_export) for the rest. The choice lives here,
above both converters, so neither imports the other's recipe and the quantisers
(relman.compress.quantize) take either converter's graph as input."""

from __future__ import annotations

from typing import Any

from relman.compress.export import genai_export
from relman.compress.export.onnx_export import ONNX_FILE, export_onnx, onnx_weight_stats, require_task
from relman.errors import RecipeError
from relman.tasks.specs import get_task


def export_recipe(sources: list[Any], params: dict[str, Any], ctx: Any) -> Any:
    """Recipe "onnx-export": the parent as an ONNX folder, max abs diff recorded."""
    from relman.catalog import Metric
    from relman.compress.registry import RecipeOutput

    src = sources[0]
    task = require_task(src)
    if genai_export.builder_wanted(src, params):
        return genai_export.export_with_genai(src, "fp32", {}, ctx, tolerance=float(params["tolerance"]))
    ctx.progress(0.1, "exporting to ONNX")
    with_past = bool(params.get("kv_cache", True)) and get_task(task, RecipeError).causal
    result = export_onnx(src.folder, ctx.workdir / "out", task, fmt=src.format, opset=int(params["opset"]),
                         tolerance=float(params["tolerance"]), with_past=with_past)
    ctx.progress(0.9, f"verified: max abs diff {result.max_abs_diff:.3g}")
    n, nbytes, dtype = onnx_weight_stats(result.folder / ONNX_FILE)
    return RecipeOutput(folder=result.folder, format="onnx", params=n, dtype=dtype,
                        meta={"onnx": {"inputs": result.input_names, "output": result.output_name,
                                       "opset": result.opset, "dynamic_axes": ["batch", "sequence"],
                                       "kv_cache": with_past}},
                        metrics=[Metric("compress", "export_max_abs_diff", result.max_abs_diff,
                                        {"tolerance": float(params["tolerance"])}),
                                 Metric("compress", "weight_bytes", float(nbytes))])
