"""INT8 quantisation with onnxruntime (recipe "ort-int8"): dynamic, or static with calibration.

Steps: the parent's ONNX graph (exported and verified first when the parent is a Hugging Face
folder) → onnxruntime's `quant_pre_process` (ONNX shape inference + ORT graph optimisation;
the symbolic shape pass is skipped because it cannot follow transformers' mask arithmetic and
would leave a temp file in the working directory) → `quantize_dynamic` or `quantize_static`
(QDQ). Static calibration reads batches of a registered dataset through the model's own
tokenizer / image processor; without a dataset it falls back to random valid inputs and says
so in the version's metadata, because such scales are only a guess.

Nodes can be kept in float by name (`nodes_to_exclude`), by op type (`op_types_to_exclude`),
or by sensitivity (`keep_sensitive`: the N weight nodes whose weights lose most to INT8,
measured as the relative error of per-tensor symmetric rounding — outlier-heavy weights are the
ones INT8 hurts).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from relman.compress.export.onnx_export import (ONNX_FILE, copy_side_files, onnx_check_inputs, onnx_source, onnx_weight_stats,
                                         output_diff, run_onnx, save_onnx)
from relman.errors import RecipeError

QUANT_OPS = ("DynamicQuantizeLinear", "MatMulInteger", "QuantizeLinear", "DequantizeLinear", "QLinearMatMul",
             "DynamicQuantizeMatMul", "QGemm", "QAttention")


def quantizable_op_types(mode: str) -> list[str]:
    from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry

    return sorted(IntegerOpsRegistry if mode == "dynamic" else QDQRegistry)


# Static (QDQ) quantisation of every op also quantises activations such as LayerNorm inputs and
# attention-mask arithmetic, whose outlier-heavy ranges cost transformers a lot of accuracy
# (measured on all-MiniLM-L6-v2, embedding cosine vs FP32: 0.84 with every op, 0.92 with the
# weight ops only, 0.94 per-channel, unchanged at 0.94 when the embedding Gather is added,
# which brings the size from 0.65 to 0.26 of FP32); so static mode quantises the
# weight-bearing ops and the embedding lookups unless told otherwise.
STATIC_DEFAULT_OPS = ("MatMul", "Gemm", "Conv", "Gather")


def default_op_types(mode: str) -> list[str]:
    return list(STATIC_DEFAULT_OPS) if mode == "static" else quantizable_op_types(mode)


def weight_nodes(model: Any) -> list[tuple[str, str, np.ndarray]]:
    """(node name, op type, weight) of every MatMul/Gemm whose second input is an initializer."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in inits:
            out.append((node.name, node.op_type, numpy_helper.to_array(inits[node.input[1]])))
    return out


def int8_sensitivity(weight: np.ndarray) -> float:
    """Relative error ||W - Q(W)|| / ||W|| of symmetric per-tensor INT8 rounding."""
    w = weight.astype(np.float64)
    scale = np.abs(w).max() / 127.0
    if scale == 0:
        return 0.0
    q = np.clip(np.round(w / scale), -127, 127) * scale
    return float(np.linalg.norm(w - q) / (np.linalg.norm(w) or 1.0))


def most_sensitive(model: Any, n: int) -> list[str]:
    ranked = sorted(weight_nodes(model), key=lambda t: int8_sensitivity(t[2]), reverse=True)
    return [name for name, _, _ in ranked[:n]]


def encode_dataset(folder: Path, task: str, ds: Any, max_length: int, config: dict[str, Any]) -> dict[str, np.ndarray]:
    """Model inputs for a whole dataset, with the model's own preprocessing."""
    from relman.modelio.loading import load_preprocessor

    from relman.compress.export.onnx_export import is_image

    pre = load_preprocessor(folder, task)
    if is_image(task):
        if ds.images is None:
            raise RecipeError(f"dataset '{ds.name}' holds no images, but the model is an image classifier")
        images = np.asarray(ds.images)
        if images.ndim == 3:
            images = images[..., None]
        want = int(config.get("num_channels", 3))
        if images.shape[-1] != want:
            images = np.repeat(images, want, axis=-1) if images.shape[-1] == 1 else \
                images.mean(axis=-1, keepdims=True).round().astype(np.uint8)
        out = pre(images=list(images), return_tensors="np", input_data_format="channels_last")
        return {"pixel_values": np.asarray(out["pixel_values"], dtype=np.float32)}
    if ds.texts is None:
        raise RecipeError(f"dataset '{ds.name}' holds no texts, but the model takes text")
    limit = min(max_length, int(config.get("max_position_embeddings") or config.get("n_positions") or max_length))
    enc = pre(list(ds.texts), padding="longest", truncation=True, max_length=limit, return_tensors="np")
    return {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()
            if k in ("input_ids", "attention_mask", "token_type_ids")}


def calibration_feeds(ctx: Any, src_folder: Path, task: str, onnx_path: Path, dataset: str, n: int,
                      batch_size: int, max_length: int) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    """Calibration batches and a description of where they came from."""
    import onnx

    from relman.modelio.loading import read_config

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    if not dataset:
        feeds = onnx_check_inputs(onnx_path, task, src_folder)
        feeds = [{k: v for k, v in f.items() if k in names} for f in feeds]
        return feeds, {"source": "synthetic", "note": "no dataset given: scales calibrated on random inputs",
                       "batches": len(feeds)}
    from relman.data.stored import load_dataset

    ds = load_dataset(ctx.catalog, dataset, "train")
    ds = ds.head(n)
    arrays = encode_dataset(src_folder, task, ds, max_length, read_config(src_folder))
    arrays = {k: v for k, v in arrays.items() if k in names}
    total = len(next(iter(arrays.values())))
    if total == 0:
        raise RecipeError(f"dataset '{dataset}' has no rows to calibrate on")
    feeds = [{k: v[i:i + batch_size] for k, v in arrays.items()} for i in range(0, total, batch_size)]
    for missing in set(names) - set(arrays):
        if missing == "token_type_ids":
            for f in feeds:
                f[missing] = np.zeros_like(f["input_ids"])
        else:
            raise RecipeError(f"the model needs input '{missing}', which the preprocessing did not make")
    return feeds, {"source": "dataset", "dataset": dataset, "dataset_sha256": ds.sha256, "samples": total,
                   "batches": len(feeds)}


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - not used by the calibrators we call
        pass


def preprocess(src: Path, dest: Path) -> str:
    """onnxruntime's quantization pre-processing; returns what was done, or why not."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dest), skip_symbolic_shape=True, skip_optimization=False,
                          skip_onnx_shape=False)
        return "onnx shape inference + ORT graph optimisation"
    except Exception as e:  # an optimiser limit is not a reason to refuse quantisation
        dest.unlink(missing_ok=True)
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        return f"skipped ({type(e).__name__}: {first})"


def ort_int8(sources: list[Any], params: dict[str, Any], ctx: Any) -> Any:
    """Recipe "ort-int8"."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    from relman.catalog import Metric
    from relman.compress.registry import RecipeOutput

    logging.getLogger("onnxruntime").setLevel(logging.WARNING)
    src = sources[0]
    task = src.task
    if not task:
        raise RecipeError(f"{src.version.ref} has no task recorded; re-import it with --task")
    mode = params["mode"]
    work = ctx.workdir / "ort-int8"
    work.mkdir(parents=True, exist_ok=True)
    ctx.progress(0.05, "exporting to ONNX" if src.format != "onnx" else "reading the ONNX graph")
    onnx_in, export_diff = onnx_source(src.folder, src.format, task, work, tolerance=float(params["export_tolerance"]))
    ctx.check_cancelled()
    model_in = onnx_in
    extra_meta: dict[str, Any] = {}
    prep = _Calibration(ctx, src, task, onnx_in, params)
    if params["smooth"]:
        ctx.progress(0.12, "smoothing activations into the LayerNorms")
        model_in, extra_meta["smoothing"] = smooth_onnx(onnx_in, work / "smoothed", prep, float(params["smooth_alpha"]))
    pre_note = "not requested"
    fused = None
    if params["fusion"]:
        ctx.progress(0.2, "fusing transformer subgraphs")
        fused, extra_meta["fusion"] = fuse_transformer(model_in, work / "fused.onnx", src.folder)
        if fused is not None:
            model_in, pre_note = fused, "ORT transformer fusions (instead of quant_pre_process)"
    if params["optimize"] and fused is None:
        ctx.progress(0.2, "optimising the graph")
        pre_note = preprocess(model_in, work / "pre.onnx")
        if (work / "pre.onnx").is_file():
            model_in = work / "pre.onnx"
    ctx.check_cancelled()
    graph = onnx.load(str(model_in))
    node_names = {n.name for n in graph.graph.node}
    unknown = [n for n in params["nodes_to_exclude"] if n not in node_names]
    if unknown:
        examples = ", ".join(name for name, _, _ in weight_nodes(graph)[:4])
        raise RecipeError(f"nodes_to_exclude: no node named {', '.join(unknown[:3])} in the graph "
                          f"(weight nodes are named like: {examples})")
    allowed = quantizable_op_types(mode)
    asked = list(params.get("op_types") or [])
    bad_ops = [op for op in asked + list(params["op_types_to_exclude"]) if op not in allowed]
    if bad_ops:
        raise RecipeError(f"op type {', '.join(bad_ops)} is not quantised in {mode} mode "
                          f"(quantisable: {', '.join(allowed)})")
    sensitive: list[str] = []
    if params["keep_sensitive"] and params["sensitivity"] == "outputs":
        ctx.progress(0.25, "measuring per-layer sensitivity")
        ranking = prep.sensitivity(graph, bool(params["per_channel"]),
                                   graph_id={k: params[k] for k in ("smooth", "smooth_alpha", "fusion", "optimize")})
        extra_meta["sensitivity"] = {"method": "model output error, one layer dynamic INT8 at a time",
                                     "top": [r.as_dict() for r in ranking[:12]]}
        sensitive = [r.node for r in ranking[:int(params["keep_sensitive"])]]
    elif params["keep_sensitive"]:
        sensitive = most_sensitive(graph, int(params["keep_sensitive"]))
    exclude = sorted(set(params["nodes_to_exclude"]) | set(sensitive))
    chosen = asked or default_op_types(mode)
    op_types = [op for op in chosen if op not in params["op_types_to_exclude"]]
    large = graph.ByteSize() > 1_500_000_000
    del graph
    q_path = work / "quantized.onnx"
    calib: dict[str, Any] = {}
    ctx.progress(0.35, f"quantising ({mode})")
    if mode == "dynamic":
        quantize_dynamic(str(model_in), str(q_path), per_channel=bool(params["per_channel"]),
                         weight_type=QuantType.QInt8, nodes_to_exclude=exclude, op_types_to_quantize=op_types,
                         use_external_data_format=large, extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT})
    else:
        feeds, calib = calibration_feeds(ctx, src.folder, task, model_in, params.get("dataset") or "",
                                         int(params["calibration_samples"]), int(params["calibration_batch"]),
                                         int(params["max_length"]))
        ctx.log_json("calibration", calib)
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[params["calibrate_method"]]
        act = QuantType.QUInt8 if params["activation_type"] == "uint8" else QuantType.QInt8
        try:
            quantize_static(str(model_in), str(q_path), _Reader(feeds), quant_format=QuantFormat.QDQ,
                            per_channel=bool(params["per_channel"]), activation_type=act,
                            weight_type=QuantType.QInt8, nodes_to_exclude=exclude, op_types_to_quantize=op_types,
                            calibrate_method=method, use_external_data_format=large,
                            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT})
        except ValueError as e:  # e.g. an activation range the calibrator cannot bound (masks at -inf)
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise RecipeError(f"static calibration ({params['calibrate_method']}) failed: {first}; "
                              "try calibrate_method=minmax") from None
    ctx.check_cancelled()
    qmodel = onnx.load(str(q_path))
    n_quant = sum(1 for n in qmodel.graph.node if n.op_type in QUANT_OPS)
    if n_quant == 0:
        raise RecipeError(f"nothing in {src.version.ref} was quantised (no {', '.join(op_types)} node with "
                          "constant weights outside the excluded ones)")
    out = ctx.workdir / "out"
    save_onnx(qmodel, out)
    del qmodel
    copy_side_files(src.folder, out)
    ctx.progress(0.8, "checking the quantised model against the parent")
    checks = onnx_check_inputs(onnx_in, task, src.folder)
    refs = run_onnx(onnx_in, checks)
    outs = run_onnx(out / ONNX_FILE, checks)
    diff = max(output_diff(o, r, f, task) for o, r, f in zip(outs, refs, checks))
    if not np.isfinite(diff):
        raise RecipeError("the quantised model produces non-finite outputs on test inputs; nothing stored")
    n_params, nbytes, dtype = onnx_weight_stats(out / ONNX_FILE)
    _, parent_bytes, _ = onnx_weight_stats(onnx_in)
    meta = {"mode": mode, "per_channel": bool(params["per_channel"]), "preprocess": pre_note,
            "kept_float_nodes": exclude, "sensitive_nodes": sensitive, "op_types": op_types,
            "op_types_excluded": list(params["op_types_to_exclude"]), "quant_nodes": n_quant}
    if calib:
        meta["calibration"] = calib
    meta.update(extra_meta)
    if prep.described:
        meta["calibration_ranges"] = prep.described
    metrics = [Metric("compress", "max_abs_diff_vs_parent", diff, {"inputs": "random, 2 shapes"}),
               Metric("compress", "weight_bytes", float(nbytes)),
               Metric("compress", "weight_bytes_ratio", nbytes / parent_bytes if parent_bytes else None,
                      {"versus": "fp32 ONNX graph of the parent"})]
    if export_diff is not None:
        metrics.append(Metric("compress", "export_max_abs_diff", export_diff))
    return RecipeOutput(folder=out, format="onnx", params=n_params, dtype="int8",
                        meta=meta, metrics=metrics)


class _Calibration:
    """Calibration feeds and cached statistics for one recipe run (computed on first use)."""

    def __init__(self, ctx: Any, src: Any, task: str, onnx_in: Path, params: dict[str, Any]) -> None:
        self.ctx, self.src, self.task, self.onnx_in, self.params = ctx, src, task, onnx_in, params
        self._feeds: list[dict[str, np.ndarray]] | None = None
        self.calib: dict[str, Any] = {}
        self.described: dict[str, Any] = {}

    def feeds(self) -> list[dict[str, np.ndarray]]:
        if self._feeds is None:
            p = self.params
            self._feeds, self.calib = calibration_feeds(self.ctx, self.src.folder, self.task, self.onnx_in,
                                                        p.get("dataset") or "", int(p["calibration_samples"]),
                                                        int(p["calibration_batch"]), int(p["max_length"]))
        return self._feeds

    def _key(self, what: str, extra: dict[str, Any]) -> str:
        from relman.compress.quantize.calib_cache import cache_key

        p = self.params
        dataset = p.get("dataset") or ""
        dsha = "synthetic"
        if dataset:
            from relman.data.stored import load_dataset

            dsha = load_dataset(self.ctx.catalog, dataset, "train").sha256
        settings = {"what": what, "samples": p["calibration_samples"], "batch": p["calibration_batch"],
                    "max_length": p["max_length"], "dataset": dataset, **extra}
        return cache_key(getattr(self.src.version, "manifest_sha256", "") or str(self.src.folder), dsha, settings)

    def cached(self, what: str, extra: dict[str, Any], compute: Any) -> dict[str, np.ndarray]:
        from relman.compress.quantize.calib_cache import for_catalog

        cache = for_catalog(self.ctx.catalog)
        key = self._key(what, extra)
        got = cache.get(key)
        if got is None:
            got = compute()
            cache.put(key, got)
        self.described[what] = {"key": key[:16], "reused": cache.hits > 0}
        return got

    def ranges(self, model: Any, tensors: list[str]) -> dict[str, np.ndarray]:
        from relman.compress.quantize.calib_cache import channel_absmax

        return self.cached("channel_absmax", {"tensors": sorted(tensors)},
                           lambda: channel_absmax(model, self.feeds(), tensors))

    def sensitivity(self, graph: Any, per_channel: bool, graph_id: dict[str, Any]) -> list[Any]:
        from relman.compress.quantize.sensitivity import LayerSensitivity, layer_sensitivity

        ops = dict(weight_nodes_ops(graph))

        def compute() -> dict[str, np.ndarray]:
            ranked = layer_sensitivity(graph, self.feeds(), per_channel=per_channel,
                                       progress=lambda f, m: self.ctx.progress(0.25 + 0.08 * f, m))
            return {r.node: np.asarray(r.error) for r in ranked}

        errors = self.cached("layer_sensitivity", {"per_channel": per_channel, **graph_id}, compute)
        ranked = [LayerSensitivity(n, ops.get(n, "?"), float(e)) for n, e in errors.items() if n in ops]
        return sorted(ranked, key=lambda r: r.error, reverse=True)


def weight_nodes_ops(model: Any) -> list[tuple[str, str]]:
    from relman.compress.quantize.sensitivity import weight_layers

    return weight_layers(model)


def smooth_onnx(onnx_in: Path, dest: Path, prep: _Calibration, alpha: float) -> tuple[Path, dict[str, Any]]:
    """The parent's graph with SmoothQuant scales folded into its LayerNorms, checked against it."""
    import onnx

    from relman.compress.quantize.smoothing import find_targets, smooth_model

    graph = onnx.load(str(onnx_in))
    targets = find_targets(graph)
    if not targets:
        return onnx_in, {"alpha": alpha, "smoothed": [], "note": "no LayerNorm feeds a constant-weight MatMul"}
    ranges = prep.ranges(graph, [t.output for t in targets])
    smoothed, report = smooth_model(graph, ranges, alpha)
    del graph
    save_onnx(smoothed, dest)
    del smoothed
    checks = onnx_check_inputs(onnx_in, prep.task, prep.src.folder)
    diff = max(output_diff(o, r, f, prep.task) for o, r, f in
               zip(run_onnx(dest / ONNX_FILE, checks), run_onnx(onnx_in, checks), checks))
    out = report.as_dict()
    out["fp32_max_abs_diff"] = diff
    if not np.isfinite(diff) or diff > 1e-3:
        raise RecipeError(f"smoothing changed the FP32 model's outputs by {diff:.3g} (max abs); nothing stored")
    return dest / ONNX_FILE, out


# config.json model_type → onnxruntime.transformers optimizer model type
FUSION_MODEL_TYPES = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "distilbert": "bert",
                      "electra": "bert", "mpnet": "bert", "camembert": "bert", "gpt2": "gpt2", "vit": "vit"}


def fuse_transformer(model_in: Path, dest: Path, config_folder: Path) -> tuple[Path | None, dict[str, Any]]:
    """ONNX Runtime's transformer fusions (Attention, SkipLayerNorm, BiasGelu, EmbedLayerNorm…),
    which its quantiser turns into QAttention and friends; (None, why) when they do not apply."""
    from relman.modelio.loading import read_config

    mt = FUSION_MODEL_TYPES.get(str(read_config(config_folder).get("model_type", "")))
    if mt is None:
        return None, {"applied": False, "why": "no ORT fusion set for this architecture"}
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
        opt = optimize_model(str(model_in), model_type=mt, num_heads=0, hidden_size=0, opt_level=0)
        stats = {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}
        if not stats:
            return None, {"applied": False, "why": "no subgraph matched ORT's fusion patterns"}
        opt.save_model_to_file(str(dest))
    except Exception as e:  # a fusion limit is not a reason to refuse quantisation
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        return None, {"applied": False, "why": f"{type(e).__name__}: {first}"}
    return dest, {"applied": True, "model_type": mt, "fused": stats}
