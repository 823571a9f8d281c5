"""ONNX Runtime GenAI's model builder as the INT4 / FP16 export path for the LLM families it knows.

Why: relman's own path (TorchScript export of the whole graph, then 4-bit weights) works for
any causal LM, but on a 0.5 B-parameter Qwen2 it takes 76 s at 2.15x the weights, keeps the tied
embedding twice and writes a graph without a key/value cache. The builder
(`python -m onnxruntime_genai.models.builder`, PyPI `onnxruntime-genai`) is made for exactly
this: it writes each supported architecture's graph directly from the weights, with fused
attention (GroupQueryAttention), rotary embeddings and a KV cache (FP32 in 13 s at 1.57x on the
same model; relman's INT4 through it: 33 s at 1.63x, 303 MiB; benchmarks/bench_half_billion.py).
So recipes that export a causal LM (`int4-weight-only`, `onnx-fp16`) take an `exporter`
parameter: `auto` (the builder for a Hugging Face folder of a supported architecture when
the package is installed, else relman's exporter), `genai` (the builder or a clear error),
`relman` (always relman's exporter).

Safety: the builder runs in its own process (its memory goes back to the OS when it exits, and
a cancelled job kills it), offline, with `hf_remote=false` (no `trust_remote_code`) and
`hf_token=false`; it only reads the version's own folder, which the catalog has verified.

The builder's graph takes `past_key_values.*` (and for some families `position_ids`) besides
`input_ids` / `attention_mask`; relman's ONNX backend feeds an empty cache and positions
0..T-1, i.e. the first generation step, which returns the logits of every position — so the
quality (perplexity), fidelity, latency and memory suites run it like any other ONNX version.
Before anything is stored the child is checked against its parent (PyTorch) on random inputs
through those same backends.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from relman.errors import RecipeError

EXPORTERS = ("auto", "relman", "genai")

# Architectures (config.json "architectures"[0]) the builder exports as a plain decoder-only LM
# whose graph relman's causal-LM adapter can run. The builder knows more (vision-language,
# MoE, Whisper...), which relman does not route to it.
GENAI_ARCHITECTURES = frozenset({
    "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "PhiForCausalLM",
    "Phi3ForCausalLM", "GemmaForCausalLM", "Gemma2ForCausalLM", "GraniteForCausalLM", "OlmoForCausalLM",
    "SmolLM3ForCausalLM", "NemotronForCausalLM",
})

PRECISIONS = {"int4": "int4", "fp16": "fp16", "fp32": "fp32"}
BUILDER_LOG = "genai-builder.log"


def genai_installed() -> bool:
    """Whether `onnxruntime_genai` (and so its builder) can be run here, without importing it. The
    installers' frozen app bundles it and runs it through itself (`builder_command`)."""
    try:
        return importlib.util.find_spec("onnxruntime_genai") is not None
    except (ImportError, ValueError):
        return False


def architecture(src: Any) -> str | None:
    from relman.modelio.loading import read_config

    archs = read_config(src.folder).get("architectures") or []
    return str(archs[0]) if archs else None


def choose_exporter(src: Any, requested: str) -> str:
    """'genai' or 'relman' for this source version, or a one-line RecipeError saying why the
    requested exporter cannot be used."""
    if requested not in EXPORTERS:
        raise RecipeError(f"exporter must be one of {', '.join(EXPORTERS)}, not '{requested}'")
    if requested == "relman":
        return "relman"
    arch = architecture(src) if src.format == "hf" else None
    reasons = []
    if src.format != "hf":
        reasons.append(f"it reads a Hugging Face folder and {src.version.ref} is '{src.format}'")
    elif arch not in GENAI_ARCHITECTURES:
        reasons.append(f"architecture '{arch or 'unknown'}' is not one relman exports with it "
                       f"({', '.join(sorted(GENAI_ARCHITECTURES))})")
    if not genai_installed():
        reasons.append("onnxruntime-genai is not installed (pip install 'relman[genai]')")
    if not reasons:
        return "genai"
    if requested == "genai":
        raise RecipeError("exporter 'genai' (ONNX Runtime GenAI's builder) cannot export this version: "
                          + "; ".join(reasons))
    return "relman"


def builder_wanted(src: Any, params: dict[str, Any]) -> bool:
    """Whether a recipe with an `exporter` parameter hands `src` to the builder: only causal LMs
    can go there; asking for 'genai' with anything else, or where it cannot run, is a
    one-line RecipeError."""
    from relman.tasks.specs import get_task

    requested = str(params.get("exporter", "relman"))
    if not get_task(src.task, RecipeError).causal:
        if requested == "genai":
            raise RecipeError(f"exporter 'genai' is for causal LMs; {src.version.ref} is '{src.task}'")
        return False
    return choose_exporter(src, requested) == "genai"


def genai_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("onnxruntime-genai")
    except PackageNotFoundError:
        return "unknown"


def builder_command() -> list[str]:
    """How to start the builder in its own process: `python -m` from a Python install; in the
    frozen app, which has no interpreter, the app itself through its hidden `run-bundled`
    sub-command (relman.commands.bundled_cmds), never a system Python."""
    module = "onnxruntime_genai.models.builder"
    if getattr(sys, "frozen", False):
        return [sys.executable, "run-bundled", module]
    return [sys.executable, "-m", module]


def run_builder(src_folder: Path, out: Path, precision: str, extra: dict[str, str], ctx: Any) -> None:
    """Run the builder in its own process, offline; cancellation kills it. Its output goes to a
    log in the job's workdir, whose last line becomes the error message if it fails."""
    if precision not in PRECISIONS:
        raise RecipeError(f"the GenAI builder path supports {', '.join(PRECISIONS)}, not '{precision}'")
    cache = ctx.workdir / "genai-cache"
    log_path = ctx.workdir / BUILDER_LOG
    options = {"hf_token": "false", "hf_remote": "false", **extra}
    cmd = [*builder_command(), "-i", str(src_folder), "-o", str(out),
           "-p", PRECISIONS[precision], "-e", "cpu", "-c", str(cache),
           "--extra_options", *[f"{k}={v}" for k, v in options.items()]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        try:
            while True:
                try:
                    proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    ctx.check_cancelled()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    shutil.rmtree(cache, ignore_errors=True)
    if proc.returncode != 0 or not (out / "model.onnx").is_file():
        raise RecipeError(f"ONNX Runtime GenAI's builder failed ({precision}): {_last_error(log_path, proc.returncode)}")


def _last_error(log_path: Path, code: int) -> str:
    lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "Exception" in ln]
    return ((errors or lines or [f"exit status {code}"])[-1])[:300]


def check_inputs(folder: Path, task: str) -> list[dict[str, np.ndarray]]:
    """Random token batches of two shapes (one right-padded), from the parent's config."""
    from relman.compress.export.onnx_export import config_namespace, verification_inputs

    return verification_inputs(config_namespace(folder), task, ["input_ids", "attention_mask"])


def compare_with_parent(src: Any, out: Path, threads: int | None = None) -> tuple[float, float]:
    """(max |logit difference|, top-1 agreement) of the exported child against its PyTorch parent
    over real tokens, each run through relman's own backends (the code the suites use), one
    model in memory at a time."""
    from relman.compress.export.onnx_export import (
        output_diff,
        release_freed_memory,
        top1_agreement,
    )
    from relman.tasks.backends import open_backend

    feeds = check_inputs(src.folder, src.task)
    parent = open_backend(src.folder, src.format, src.task, "cpu", threads)
    refs = [parent.run(parent.to_native(f)) for f in feeds]
    del parent
    release_freed_memory()
    child = open_backend(out, "onnx", src.task, "cpu", threads)
    outs = [child.run(child.to_native(f)) for f in feeds]
    del child
    return (max(output_diff(o, r, f, src.task) for o, r, f in zip(outs, refs, feeds)),
            top1_agreement(outs, refs, feeds))


def build_graph(src: Any, precision: str, extra: dict[str, str], ctx: Any, out: Path) -> None:
    """The builder's graph of `src` at `precision`, written to `out` (replaced if present)."""
    shutil.rmtree(out, ignore_errors=True)
    ctx.progress(0.05, f"ONNX Runtime GenAI builder: {precision} graph of {architecture(src)}")
    run_builder(src.folder, out, precision, extra, ctx)


def export_with_genai(src: Any, precision: str, extra: dict[str, str], ctx: Any, *,
                      tolerance: float | None = None, built: Path | None = None,
                      int4_info: dict[str, Any] | None = None) -> Any:
    """The builder's graph of `src` at `precision` as a checked RecipeOutput (format "onnx").

    `built`: a folder some later pass already made from the builder's graph (the INT4 recipe
    asks the builder for FP32 and quantises it itself, relman.compress.quantize.int4); `extra`
    then describes that pass and `int4_info` what it records. Conversion stays below the
    quantisers: this module never imports them."""
    import onnx

    from relman.catalog import Metric
    from relman.compress.export.onnx_export import (
        ONNX_FILE,
        copy_side_files,
        onnx_weight_stats,
    )
    from relman.compress.registry import RecipeOutput

    out = ctx.workdir / "out"
    if built is None:
        build_graph(src, precision, extra, ctx, out)
    elif built != out:
        raise RecipeError(f"internal: a pass over the builder's graph must write {out}, not {built}")
    ctx.check_cancelled()
    # the parent's config.json (which relman's runners read) and tokenizer; the builder's
    # genai_config.json stays, so the folder also runs under onnxruntime-genai for generation
    copy_side_files(src.folder, out)
    graph = onnx.load(str(out / ONNX_FILE), load_external_data=False)
    ops = [n.op_type for n in graph.graph.node]
    n_nbits = ops.count("MatMulNBits") + ops.count("GatherBlockQuantized")
    del graph
    if precision == "int4" and n_nbits == 0:
        raise RecipeError(f"{src.version.ref}: the GenAI builder's graph has no 4-bit weights; nothing stored")
    ctx.progress(0.7, "checking against the parent (PyTorch) on random inputs")
    diff, agree = compare_with_parent(src, out)
    if not np.isfinite(diff):
        raise RecipeError(f"the {precision} model produces non-finite outputs on test inputs; nothing stored")
    if tolerance is not None and diff > tolerance:
        raise RecipeError(f"the {precision} model differs from its parent by {diff:.3g} (> tolerance {tolerance:g}) "
                          "on test inputs; nothing stored")
    n_params, nbytes, dtype = onnx_weight_stats(out / ONNX_FILE)
    parent_bytes = sum(p.stat().st_size for p in Path(src.folder).glob("*.safetensors"))
    inputs = {"inputs": "random, 2 shapes", "reference": "parent (PyTorch)"}
    metrics = [Metric("compress", "max_abs_diff_vs_parent", diff, inputs),
               Metric("compress", "top1_agreement_vs_parent", agree, inputs),
               Metric("compress", "weight_bytes", float(nbytes)),
               Metric("compress", "weight_bytes_ratio", nbytes / parent_bytes if parent_bytes else None,
                      {"parent": "safetensors bytes"})]
    if precision == "int4":
        metrics.append(Metric("compress", "int4_matmuls", float(ops.count("MatMulNBits"))))
    meta = {"exporter": "onnxruntime-genai", "exporter_version": genai_version(), "precision": precision,
            "builder_options": dict(extra), "generation_graph": True,
            **({"algo": extra["algo"], **int4_info} if precision == "int4" and int4_info is not None else {}),
            "fused_ops": sorted({op for op in ops if op in ("GroupQueryAttention", "MatMulNBits", "SkipSimplifiedLayerNormalization",
                                                           "SimplifiedLayerNormalization", "RotaryEmbedding",
                                                           "GatherBlockQuantized")})}
    return RecipeOutput(folder=out, format="onnx", params=n_params,
                        dtype="int4" if precision == "int4" else (dtype or precision), meta=meta, metrics=metrics)
