"""Weight-only INT4 for causal LMs (recipe "int4-weight-only"): blockwise 4-bit MatMul weights
(`MatMulNBits`) written one weight at a time by relman.compress.quantize.int4_stream, so memory
stays near one tensor whatever the model's size.

Algorithms (`algo`, relman.compress.quantize.int4_algos): rtn (onnxruntime's kernel), k_quant,
hqq and gptq, each a function of one weight, so all four stream. Mixed precision: `int8_layers`
(parts of node names) and `int8_sensitive=N` (the N layers whose 4-bit rounding alone moves the
model's output most) get 8-bit blocks. What does not stream runs once before the pass, over the
whole FP32 graph in one onnxruntime session (relman.compress.quantize.int4_calib, cached): GPTQ's
input Hessians (calibrated on `dataset`, required) and the sensitivity ranking.

Who writes the FP32 graph that gets quantised (`exporter`):
- ONNX Runtime GenAI's model builder (relman.compress.export.genai_export), by default for the LLM
  families it supports (Llama, Qwen, Phi, Mistral, Gemma...): a fused generation graph with a
  KV cache. relman asks it for FP32 and quantises that graph itself: the builder's own INT4 pass
  holds the whole graph twice (2.85x the weights on a 0.5 B Qwen2, against 1.57x for its FP32
  pass), and the result is bit-for-bit the same (tests/test_genai_export.py).
- relman's exporter for every other causal LM (GPT-2's Conv1D layers export as Gemm, which
  the quantiser rewrites as MatMulNBits + Add). A model with no weight to quantise (or whose
  weights are all narrower than one block) is refused with a clear message instead of
  producing an "INT4" child that is really FP32.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from relman.compress.export.onnx_export import (
    ONNX_FILE,
    copy_side_files,
    onnx_check_inputs,
    onnx_source,
    onnx_weight_stats,
    output_diff,
    release_freed_memory,
    run_onnx,
    top1_agreement,
)
from relman.errors import RecipeError


def _layer_names(onnx_in: Path, block: int, exclude: list[str]) -> dict[str, str]:
    """node name -> input tensor of every weight layer the 4-bit pass will quantise."""
    import onnx

    from relman.compress.quantize.int4_calib import weight_inputs

    model = onnx.load(str(onnx_in), load_external_data=False)
    inits = {i.name: i for i in model.graph.initializer}
    layers = weight_inputs(model)
    out = {}
    for node in model.graph.node:
        if node.name in layers and node.name not in exclude:
            t = inits[node.input[1]]
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            if len(t.dims) == 2 and (t.dims[1] if trans_b else t.dims[0]) >= block:
                out[node.name] = layers[node.name]
    return out


def quantize_graph(onnx_in: Any, out: Any, *, block: int, symmetric: bool, accuracy_level: int,
                   exclude: list[str], ctx: Any, ref: str, algo: str = "rtn", int8_layers: list[str] | None = None,
                   int8_sensitive: int = 0, src: Any = None, params: dict[str, Any] | None = None) -> Any:
    """The streaming 4-bit pass over an FP32 ONNX graph (relman.compress.quantize.int4_stream), with the
    job's progress and cancellation; a RecipeError when it quantised nothing.

    `int8_layers` (substrings of node names) and the `int8_sensitive` layers whose 4-bit round
    trip alone moves the model's output most (relman.compress.quantize.int4_calib) get 8-bit
    blocks; gptq first collects its input Hessians on the calibration dataset."""
    from relman.compress.quantize.int4_calib import Int4Calibration
    from relman.compress.quantize.int4_stream import quantize_int4_streaming

    layers = _layer_names(Path(onnx_in), block, exclude)
    int8: list[str] = []
    for pattern in int8_layers or []:
        hit = [n for n in layers if pattern in n]
        if not hit:
            sample = ", ".join(list(layers)[-3:])
            raise RecipeError(f"int8_layers: no quantisable MatMul of {ref} has '{pattern}' in its name "
                              f"(they look like {sample})")
        int8 += [n for n in hit if n not in int8]
    calib = Int4Calibration(ctx, src, Path(onnx_in), Path(onnx_in).parent, params or {}) \
        if (algo == "gptq" or int8_sensitive) else None
    ranked: list[tuple[str, float]] = []
    if int8_sensitive and calib is not None:
        ctx.progress(0.2, f"ranking {len(layers)} layers by their 4-bit error")
        ranked = calib.sensitivity(list(layers), algo, block, symmetric)
        int8 += [n for n, _ in ranked if n not in int8][:int8_sensitive]
    hessians = None
    if algo == "gptq" and calib is not None:
        ctx.progress(0.25, "GPTQ: input statistics on the calibration data")
        hessians = calib.hessians({n: t for n, t in layers.items() if n not in int8})

    def progress(done: int, total: int, name: str) -> None:
        ctx.progress(0.3 + 0.45 * done / max(total, 1), f"4-bit weights {done}/{total} ({algo}, block {block})")

    result = quantize_int4_streaming(Path(onnx_in), Path(out), block_size=block, symmetric=symmetric,
                                     accuracy_level=accuracy_level, exclude=tuple(exclude), algo=algo,
                                     int8_nodes=tuple(int8), hessians=hessians, progress=progress,
                                     check_cancelled=ctx.check_cancelled)
    if result.int4_matmuls + result.int8_matmuls == 0:
        raise RecipeError(f"{ref} has no MatMul weights to quantise to 4 bits (its graph has no MatMul or Gemm with a "
                          f"constant 2-D weight at least {block} wide that is not excluded)")
    result.calibration = dict(calib.described) if calib is not None else {}
    result.sensitivity = ranked
    return result


def int4_meta(result: Any) -> dict[str, Any]:
    """What a child records about its mixed precision and calibration."""
    meta: dict[str, Any] = {"int8_layers": list(result.int8_nodes)}
    if result.sensitivity:
        meta["int4_sensitivity"] = [{"node": n, "error": e} for n, e in result.sensitivity[:8]]
    if result.calibration:
        meta["calibration"] = result.calibration
    return meta


def check_params(params: dict[str, Any]) -> tuple[str, bool]:
    """(algo, effective symmetric); a RecipeError for combinations that cannot run."""
    from relman.compress.quantize.int4_algos import ASYMMETRIC_ONLY

    algo = str(params.get("algo") or "rtn")
    if algo == "gptq" and not params.get("dataset"):
        raise RecipeError("algo=gptq calibrates on text: give dataset=NAME (a registered text dataset)")
    symmetric = bool(params["symmetric"]) and algo not in ASYMMETRIC_ONLY
    return algo, symmetric


def _int4_over_builder(ctx: Any, *, src: Any, block: int, symmetric: bool, accuracy_level: int,
                       exclude: list[str], **choice: Any) -> Any:
    """The GenAI builder writes FP32; relman.compress.quantize.int4_stream quantises it one weight
    at a time — the same MatMulNBits / GatherBlockQuantized graph the builder's `-p int4` writes,
    bit for bit, at about half the peak memory (its INT4 pass converts the whole in-memory graph
    to a protobuf first). The builder's checks and record (export_with_genai) then apply."""
    import shutil

    from relman.compress.export import genai_export

    fp32 = ctx.workdir / "genai-fp32"
    genai_export.build_graph(src, "fp32", {}, ctx, fp32)
    out = ctx.workdir / "out"
    shutil.rmtree(out, ignore_errors=True)
    q = quantize_graph(fp32 / ONNX_FILE, out, block=block, symmetric=symmetric, accuracy_level=accuracy_level,
                       exclude=exclude, ctx=ctx, ref=src.version.ref, **choice)
    for p in fp32.iterdir():  # genai_config.json, the builder's tokenizer files
        if p.is_file() and not p.name.startswith(ONNX_FILE):
            shutil.copy2(p, out / p.name)
    shutil.rmtree(fp32, ignore_errors=True)
    described = {"precision": "fp32 then relman's streaming int4", "block_size": str(block),
                 "is_symmetric": str(bool(symmetric)).lower(), "accuracy_level": str(accuracy_level),
                 **({"nodes_to_exclude": ",".join(exclude)} if exclude else {}),
                 "algo": q.algo, **({"int8_layers": ",".join(q.int8_nodes)} if q.int8_nodes else {})}
    return genai_export.export_with_genai(src, "int4", described, ctx, built=out, int4_info=int4_meta(q))


def int4_weight_only(sources: list[Any], params: dict[str, Any], ctx: Any) -> Any:
    """Recipe "int4-weight-only"."""
    from relman.catalog import Metric
    from relman.compress.export import genai_export
    from relman.compress.registry import RecipeOutput
    from relman.tasks.specs import tasks_with_recipe

    for name in ("onnxruntime", "onnxruntime.quantization"):
        logging.getLogger(name).setLevel(logging.WARNING)
    src = sources[0]
    if src.task not in tasks_with_recipe("int4-weight-only"):
        raise RecipeError(f"recipe 'int4-weight-only' is for causal LMs; {src.version.ref} is "
                          f"'{src.task or 'unknown'}'")
    block = int(params["block_size"])
    algo, symmetric = check_params(params)
    level, exclude = int(params["accuracy_level"]), list(params["nodes_to_exclude"])
    choice = {"algo": algo, "int8_layers": list(params.get("int8_layers") or []),
              "int8_sensitive": int(params.get("int8_sensitive") or 0), "src": src, "params": params}
    if genai_export.builder_wanted(src, params):
        # level 0 = the builder's own CPU default (int8 compute), so the child is what it would write
        return _int4_over_builder(ctx, block=block, symmetric=symmetric, accuracy_level=level or 4,
                                  exclude=exclude, **choice)
    work = ctx.workdir / "int4"
    work.mkdir(parents=True, exist_ok=True)
    ctx.progress(0.05, "exporting to ONNX" if src.format != "onnx" else "reading the ONNX graph")
    onnx_in, export_diff = onnx_source(src.folder, src.format, src.task, work,
                                       tolerance=float(params["export_tolerance"]))
    ctx.check_cancelled()
    release_freed_memory()  # what the export freed (PyTorch's copy of the weights) goes back first
    out = ctx.workdir / "out"
    result = quantize_graph(onnx_in, out, block=block, symmetric=symmetric, accuracy_level=level, exclude=exclude,
                            ctx=ctx, ref=src.version.ref, **choice)
    copy_side_files(src.folder, out)
    ctx.progress(0.8, "checking against the parent")
    checks = onnx_check_inputs(onnx_in, src.task, src.folder)
    refs = run_onnx(onnx_in, checks)
    outs = run_onnx(out / ONNX_FILE, checks)
    diff = max(output_diff(o, r, f, src.task) for o, r, f in zip(outs, refs, checks))
    agree = top1_agreement(outs, refs, checks)
    if not np.isfinite(diff):
        raise RecipeError("the 4-bit model produces non-finite outputs on test inputs; nothing stored")
    n_params, nbytes, _ = onnx_weight_stats(out / ONNX_FILE)
    _, parent_bytes, _ = onnx_weight_stats(onnx_in)
    metrics = [Metric("compress", "max_abs_diff_vs_parent", diff, {"inputs": "random, 2 shapes"}),
               Metric("compress", "top1_agreement_vs_parent", agree, {"inputs": "random, 2 shapes"}),
               Metric("compress", "weight_bytes", float(nbytes)),
               Metric("compress", "weight_bytes_ratio", nbytes / parent_bytes if parent_bytes else None),
               Metric("compress", "int4_matmuls", float(result.int4_matmuls)),
               Metric("compress", "int8_matmuls", float(result.int8_matmuls))]
    if export_diff is not None:
        metrics.append(Metric("compress", "export_max_abs_diff", export_diff))
    return RecipeOutput(folder=out, format="onnx", params=n_params, dtype="int4",
                        meta={"algo": algo, "block_size": block, "symmetric": symmetric,
                              "int4_matmuls": result.int4_matmuls, **int4_meta(result),
                              "gemm_rewritten": result.gemm_rewritten, "kept_float": len(result.kept_float),
                              "tied_embeddings_int4": result.tied_embeddings},
                        metrics=metrics)
