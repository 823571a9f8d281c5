"""Weight-only INT4 for causal LMs (recipe "int4-weight-only"), with onnxruntime's 4-bit
MatMul quantizer (`MatMulNBitsQuantizer`, blockwise, RTN).

For the LLM families ONNX Runtime GenAI's model builder supports (Llama, Qwen, Phi, Mistral,
Gemma...) the default `exporter=auto` hands the whole job to that builder instead
(relman.compress.genai_export: a fused graph with a KV cache, written straight from the
weights); what follows is relman's own path, for every other causal LM or `exporter=relman`.

The quantizer only rewrites `MatMul` nodes with constant weights into `MatMulNBits`. GPT-2's
blocks are `Conv1D` layers that the TorchScript exporter emits as `Gemm` (addmm), so before
quantising, every plain `Gemm` with a constant weight (alpha = beta = 1, no transposed A) is
rewritten as `MatMul` + `Add` — the same arithmetic — so those weights are quantised too.
A model with no such weights (or whose weights are all narrower than one block) is refused
with a clear message instead of producing an "INT4" child that is really FP32. Weights
narrower than a block are padded by the quantizer (block_size 16 or 32 suits small models).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from relman.compress.onnx_export import (ONNX_FILE, copy_side_files, onnx_check_inputs, onnx_source, onnx_weight_stats,
                                         output_diff, release_freed_memory, run_onnx, save_onnx)
from relman.errors import RecipeError


def gemm_to_matmul(model: Any) -> int:
    """Rewrite constant-weight Gemm nodes as MatMul (+ Add for the bias) in place; returns the
    number rewritten."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    users: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    new_nodes = []
    rewritten = 0
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = (node.op_type == "Gemm" and len(node.input) >= 2 and node.input[1] in inits
                 and float(attrs.get("alpha", 1.0)) == 1.0 and float(attrs.get("beta", 1.0)) == 1.0
                 and not attrs.get("transA", 0) and (not attrs.get("transB", 0) or users.get(node.input[1]) == 1))
        if not plain:
            new_nodes.append(node)
            continue
        weight = inits[node.input[1]]
        if attrs.get("transB", 0):
            arr = np.ascontiguousarray(numpy_helper.to_array(weight).T)
            weight.CopyFrom(numpy_helper.from_array(arr, weight.name))
        has_bias = len(node.input) > 2 and node.input[2]
        mm_out = node.output[0] + "_matmul" if has_bias else node.output[0]
        new_nodes.append(helper.make_node("MatMul", [node.input[0], node.input[1]], [mm_out],
                                          name=(node.name or "gemm") + "_MatMul"))
        if has_bias:
            new_nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]],
                                              name=(node.name or "gemm") + "_Add"))
        rewritten += 1
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    return rewritten


def int4_weight_only(sources: list[Any], params: dict[str, Any], ctx: Any) -> Any:
    """Recipe "int4-weight-only"."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    from relman.catalog import Metric
    from relman.compress.registry import RecipeOutput

    for name in ("onnxruntime", "onnxruntime.quantization", "onnxruntime.quantization.matmul_nbits_quantizer"):
        logging.getLogger(name).setLevel(logging.WARNING)
    src = sources[0]
    from relman.tasks.specs import tasks_with_recipe

    if src.task not in tasks_with_recipe("int4-weight-only"):
        raise RecipeError(f"recipe 'int4-weight-only' is for causal LMs; {src.version.ref} is "
                          f"'{src.task or 'unknown'}'")
    block = int(params["block_size"])
    from relman.compress import genai_export

    if genai_export.choose_exporter(src, str(params.get("exporter", "relman"))) == "genai":
        extra = {"block_size": str(block), "is_symmetric": str(bool(params["symmetric"])).lower()}
        if int(params["accuracy_level"]):
            extra["accuracy_level"] = str(int(params["accuracy_level"]))
        if params["nodes_to_exclude"]:
            extra["nodes_to_exclude"] = ",".join(params["nodes_to_exclude"])
        return genai_export.export_with_genai(src, "int4", extra, ctx)
    work = ctx.workdir / "int4"
    work.mkdir(parents=True, exist_ok=True)
    ctx.progress(0.05, "exporting to ONNX" if src.format != "onnx" else "reading the ONNX graph")
    onnx_in, export_diff = onnx_source(src.folder, src.format, src.task, work,
                                       tolerance=float(params["export_tolerance"]))
    ctx.check_cancelled()
    release_freed_memory()  # what the export freed (PyTorch's copy of the weights) goes back first
    model = onnx.load(str(onnx_in))
    rewritten = gemm_to_matmul(model)
    # names only, from the initializers' dims: converting every weight to numpy here held a
    # second copy of the model (measured: +2 GB on a 0.5 B LM) through the quantisation
    inits = {i.name: len(i.dims) for i in model.graph.initializer}
    candidates = [n.name for n in model.graph.node
                  if n.op_type == "MatMul" and len(n.input) > 1 and inits.get(n.input[1]) == 2]
    if not candidates:
        raise RecipeError(f"{src.version.ref} has no MatMul weights to quantise to 4 bits (its graph has no MatMul "
                          "or Gemm with a constant 2-D weight)")
    ctx.progress(0.3, f"quantising {len(candidates)} MatMul weights to 4 bits (block {block})")
    cfg = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=bool(params["symmetric"]),
                                       accuracy_level=int(params["accuracy_level"]) or None)
    quantizer = MatMulNBitsQuantizer(model, block_size=block, is_symmetric=bool(params["symmetric"]),
                                     accuracy_level=int(params["accuracy_level"]) or None,
                                     nodes_to_exclude=list(params["nodes_to_exclude"]), algo_config=cfg)
    quantizer.process()
    qmodel = quantizer.model.model
    n_nbits = sum(1 for n in qmodel.graph.node if n.op_type == "MatMulNBits")
    if n_nbits == 0:
        raise RecipeError(f"{src.version.ref}: the 4-bit quantizer changed no MatMul (all excluded or unsupported)")
    ctx.check_cancelled()
    out = ctx.workdir / "out"
    save_onnx(qmodel, out)
    del qmodel, model, quantizer
    release_freed_memory()
    copy_side_files(src.folder, out)
    ctx.progress(0.8, "checking against the parent")
    checks = onnx_check_inputs(onnx_in, src.task, src.folder)
    refs = run_onnx(onnx_in, checks)
    outs = run_onnx(out / ONNX_FILE, checks)
    diff = max(output_diff(o, r, f, src.task) for o, r, f in zip(outs, refs, checks))
    agree = float(np.mean([(o.argmax(-1) == r.argmax(-1))[f["attention_mask"] > 0].mean()
                           for o, r, f in zip(outs, refs, checks)]))
    if not np.isfinite(diff):
        raise RecipeError("the 4-bit model produces non-finite outputs on test inputs; nothing stored")
    n_params, nbytes, _ = onnx_weight_stats(out / ONNX_FILE)
    _, parent_bytes, _ = onnx_weight_stats(onnx_in)
    metrics = [Metric("compress", "max_abs_diff_vs_parent", diff, {"inputs": "random, 2 shapes"}),
               Metric("compress", "top1_agreement_vs_parent", agree, {"inputs": "random, 2 shapes"}),
               Metric("compress", "weight_bytes", float(nbytes)),
               Metric("compress", "weight_bytes_ratio", nbytes / parent_bytes if parent_bytes else None),
               Metric("compress", "int4_matmuls", float(n_nbits))]
    if export_diff is not None:
        metrics.append(Metric("compress", "export_max_abs_diff", export_diff))
    return RecipeOutput(folder=out, format="onnx", params=n_params, dtype="int4",
                        meta={"block_size": block, "symmetric": bool(params["symmetric"]), "int4_matmuls": n_nbits,
                              "gemm_rewritten": rewritten, "kept_float": len(candidates) - n_nbits},
                        metrics=metrics)
