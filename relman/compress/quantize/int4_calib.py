"""Calibration for `int4-weight-only`: GPTQ's input Hessians and the per-layer INT4 sensitivity
behind `int8_sensitive=N`, both on batches of a registered text dataset (synthetic inputs only
for the sensitivity ranking when no dataset is named) and both kept in the catalog's
calibration cache (relman.compress.quantize.calib_cache), keyed by the parent's manifest, the
dataset's sha256 and the settings, so an `optimize` search pays for them once.

Memory (why neither streams): both run the whole FP32 graph in onnxruntime, so they hold the
weights once (about 1x the FP32 weights, plus activations of one batch). GPTQ's statistics are one
K x K float64 Hessian per distinct MatMul input (trained LM: 4 x (3 x 256^2 + 768^2) + 256^2
values, 25 MiB; 0.5 B Qwen2: 24 x (3 x 896^2 + 4864^2) x 8 bytes, 5 GB, which is why gptq on
that model is not offered as within the 2x target). The sensitivity ranking loads the graph
into memory once per layer (relman.compress.quantize.sensitivity), so it is refused over 2 GiB:
name the layers with `int8_layers` there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from relman.errors import RecipeError

IN_MEMORY_LIMIT = 2 << 30  # one protobuf


def _graph_inputs(model: Any) -> dict[str, list[int | str | None]]:
    inits = {i.name for i in model.graph.initializer}
    out: dict[str, list[int | str | None]] = {}
    for i in model.graph.input:
        if i.name in inits:
            continue
        dims = i.type.tensor_type.shape.dim
        out[i.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]
    return out


def complete_feeds(model: Any, feeds: Sequence[dict[str, np.ndarray]], folder: Path) -> list[dict[str, np.ndarray]]:
    """Feeds with what a generation graph (ONNX Runtime GenAI's builder) also takes: an empty
    key/value cache and position ids from the attention mask, as the ONNX backend feeds it."""
    from relman.tasks.backends import cache_dims, empty_cache, is_cache_input

    inputs = _graph_inputs(model)
    dims = cache_dims(Path(folder)) if any(is_cache_input(n) for n in inputs) else {}
    out = []
    for f in feeds:
        g = {k: v for k, v in f.items() if k in inputs}
        batch = len(f["input_ids"])
        for name, shape in inputs.items():
            if name in g:
                continue
            if is_cache_input(name):
                g[name] = empty_cache(shape, batch, np.float32, dims)
            elif name == "position_ids" and "attention_mask" in f:
                g[name] = np.clip(np.cumsum(f["attention_mask"], axis=1) - 1, 0, None).astype(np.int64)
            elif name == "token_type_ids":
                g[name] = np.zeros_like(f["input_ids"])
            else:
                raise RecipeError(f"the model needs input '{name}', which the calibration data does not give")
        out.append(g)
    return out


def weight_inputs(model: Any, nodes: Sequence[str] | None = None) -> dict[str, str]:
    """node name -> the activation tensor it multiplies, for every MatMul/Gemm with a constant
    weight (or for `nodes`)."""
    from relman.compress.quantize.smoothing import _weight_rows

    inits = {i.name: i for i in model.graph.initializer}
    wanted = set(nodes) if nodes is not None else None
    return {n.name: n.input[0] for n in model.graph.node
            if _weight_rows(n, inits) is not None and (wanted is None or n.name in wanted)}


def input_hessians(onnx_path: Path, feeds: Sequence[dict[str, np.ndarray]], tensors: Sequence[str],
                   check_cancelled: Callable[[], None] | None = None) -> dict[str, np.ndarray]:
    """H = 2/n sum x x^T over the real (unpadded) positions of each named activation tensor.

    The probe graph (the weightless graph with those tensors as extra outputs) is written beside
    the source so its external data resolves, under a temp name removed afterwards."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path), load_external_data=False)
    known = {o.name for o in model.graph.output}
    tensors = sorted(set(tensors))
    for name in tensors:
        if name not in known:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    probe = Path(onnx_path).parent / f".hessian-probe-{os.getpid()}.onnx"
    try:
        onnx.save(model, str(probe))
        del model
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep the tensors observable
        opts.add_session_config_entry("session.disable_prepacking", "1")
        sess = ort.InferenceSession(str(probe), sess_options=opts, providers=["CPUExecutionProvider"])
    finally:
        probe.unlink(missing_ok=True)
    sums: dict[str, np.ndarray] = {}
    count = 0
    for feed in feeds:
        if check_cancelled is not None:
            check_cancelled()
        values = sess.run(tensors, feed)
        mask = feed.get("attention_mask")
        real = mask.reshape(-1) > 0 if mask is not None else None
        for name, v in zip(tensors, values):
            x = v.reshape(-1, v.shape[-1]).astype(np.float64)
            if real is not None and len(real) == len(x):
                x = x[real]
            sums[name] = sums.get(name, 0.0) + x.T @ x
        count += int(real.sum()) if real is not None else len(values[0].reshape(-1, values[0].shape[-1]))
    del sess
    if count == 0:
        raise RecipeError("the calibration data has no tokens to collect GPTQ statistics on")
    return {name: 2.0 * s / count for name, s in sums.items()}


class Int4Calibration:
    """Calibration batches of one recipe run and the statistics cached from them."""

    def __init__(self, ctx: Any, src: Any, onnx_in: Path, graph_folder: Path, params: dict[str, Any]) -> None:
        self.ctx, self.src, self.onnx_in, self.graph_folder, self.params = ctx, src, onnx_in, graph_folder, params
        self.dataset = str(params.get("dataset") or "")
        self._feeds: list[dict[str, np.ndarray]] | None = None
        self.described: dict[str, Any] = {}

    def _dataset(self) -> Any:
        from relman.data.stored import load_dataset

        return load_dataset(self.ctx.catalog, self.dataset, "train")

    def feeds(self) -> list[dict[str, np.ndarray]]:
        import onnx

        if self._feeds is not None:
            return self._feeds
        graph = onnx.load(str(self.onnx_in), load_external_data=False)
        p = self.params
        if self.dataset:
            from relman.compress.quantize.quant_ort import encode_dataset
            from relman.modelio.loading import read_config

            ds = self._dataset().head(int(p["calibration_samples"]))
            arrays = encode_dataset(self.src.folder, self.src.task, ds, int(p["max_length"]),
                                    read_config(self.src.folder))
            total = len(arrays["input_ids"])
            if total == 0:
                raise RecipeError(f"dataset '{self.dataset}' has no rows to calibrate on")
            b = int(p["calibration_batch"])
            raw = [{k: v[i:i + b] for k, v in arrays.items()} for i in range(0, total, b)]
            self.described["calibration"] = {"source": "dataset", "dataset": self.dataset, "samples": total,
                                             "dataset_sha256": ds.sha256}
        else:
            from relman.compress.export.onnx_export import onnx_check_inputs

            raw = onnx_check_inputs(self.onnx_in, self.src.task, self.src.folder)
            self.described["calibration"] = {"source": "synthetic", "batches": len(raw)}
        self._feeds = complete_feeds(graph, raw, self.graph_folder)
        return self._feeds

    def cached(self, what: str, extra: dict[str, Any], compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        from relman.compress.quantize.calib_cache import cache_key, for_catalog

        p = self.params
        settings = {"what": what, "samples": p["calibration_samples"], "batch": p["calibration_batch"],
                    "max_length": p["max_length"], "dataset": self.dataset, "exporter": p.get("exporter"), **extra}
        dsha = self._dataset().sha256 if self.dataset else "synthetic"
        model_sha = getattr(self.src.version, "manifest_sha256", "") or str(self.src.folder)
        key = cache_key(model_sha, dsha, settings)
        cache = for_catalog(self.ctx.catalog)
        got = cache.get(key)
        reused = got is not None
        if got is None:
            got = compute()
            cache.put(key, got)
        self.described[what] = {"key": key[:16], "reused": reused}
        return got

    def hessians(self, nodes: dict[str, str]) -> dict[str, np.ndarray]:
        tensors = sorted(set(nodes.values()))
        return self.cached("gptq_hessians", {"tensors": tensors},
                           lambda: input_hessians(self.onnx_in, self.feeds(), tensors, self.ctx.check_cancelled))

    def sensitivity(self, nodes: Sequence[str], algo: str, block: int, symmetric: bool) -> list[tuple[str, float]]:
        """(node, model-output relative error with only that layer 4-bit), most sensitive first."""
        from relman.compress.export.onnx_export import onnx_weight_stats
        from relman.compress.quantize.int4_algos import fake_quant

        _, nbytes, _ = onnx_weight_stats(self.onnx_in)
        if nbytes > IN_MEMORY_LIMIT:
            raise RecipeError(f"int8_sensitive runs the whole graph in memory once per layer, and this one holds "
                              f"{nbytes / 2**30:.1f} GiB of weights (limit 2 GiB); name the layers with int8_layers")

        def compute() -> dict[str, np.ndarray]:
            import onnx

            from relman.compress.quantize.sensitivity import layer_sensitivity

            model = onnx.load(str(self.onnx_in))
            ranked = layer_sensitivity(model, self.feeds(), nodes=list(nodes),
                                       weight_fn=fake_quant(algo, block, symmetric),
                                       progress=lambda f, m: self.ctx.progress(0.2 + 0.1 * f, m))
            return {r.node: np.asarray(r.error) for r in ranked}

        errors = self.cached("int4_layer_sensitivity", {"nodes": sorted(nodes), "algo": "rtn" if algo == "gptq" else algo,
                                                        "block": block, "symmetric": symmetric}, compute)
        return sorted(((n, float(e)) for n, e in errors.items()), key=lambda x: x[1], reverse=True)
