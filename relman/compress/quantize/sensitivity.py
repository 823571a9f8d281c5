"""Per-layer INT8 sensitivity: the output error when only one MatMul/Gemm is quantised.

Why measured on outputs and not on weights alone: the weight-rounding error (what
`quant_ort.int8_sensitivity` ranks by) misses what dynamic INT8 hurts most in transformers —
the per-tensor quantisation of the *activation* entering a layer, whose range a few outlier
channels dominate. So for each weight-bearing MatMul/Gemm, a copy of the FP32 graph simulates
exactly that layer as ONNX Runtime's dynamic quantisation computes it — the input through
`DynamicQuantizeLinear` → `DequantizeLinear` (uint8, asymmetric, per tensor) and the weight
rounded to symmetric INT8 (per output channel or per tensor) — and the model's output on the
calibration batches is compared with FP32's: relative L2 error ||y - y0|| / ||y0||, averaged
over batches (padding positions of a causal LM / encoder excluded). Layers are then kept in
float from the most sensitive down, as few as the quality budget needs.

All runs are in memory (one ONNX Runtime session per layer), so this is for models whose
graph fits one protobuf (< 2 GiB); that is the INT8 range relman targets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from relman.compress.quantize.smoothing import _weight_rows


@dataclass
class LayerSensitivity:
    node: str
    op_type: str
    error: float  # mean relative L2 error of the model output, only this layer quantised

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "op_type": self.op_type, "error": self.error}


def fake_quant_weight(w: np.ndarray, per_channel: bool, channel_axis: int) -> np.ndarray:
    """Symmetric INT8 round trip of a weight (per output channel or per tensor)."""
    w64 = w.astype(np.float64)
    if per_channel:
        reduce = tuple(i for i in range(w.ndim) if i != channel_axis)
        scale = np.abs(w64).max(axis=reduce, keepdims=True) / 127.0
    else:
        scale = np.asarray(np.abs(w64).max() / 127.0)
    scale = np.where(scale == 0, 1.0, scale)
    return (np.clip(np.round(w64 / scale), -127, 127) * scale).astype(np.float32)


def weight_layers(model: Any) -> list[tuple[str, str]]:
    """(node name, op type) of every MatMul/Gemm with a constant weight on input B."""
    inits = {i.name: i for i in model.graph.initializer}
    return [(n.name, n.op_type) for n in model.graph.node if _weight_rows(n, inits) is not None]


def quantise_one(model: Any, node_name: str, per_channel: bool = True,
                 weight_fn: Callable[[np.ndarray, int], np.ndarray] | None = None) -> Any:
    """A copy of `model` with only `node_name` simulated as dynamic INT8, or, given `weight_fn`
    (weight, input axis) -> rounded weight, with only its weight rounded (weight-only schemes:
    int4-weight-only's `int8_sensitive`)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name: i for i in m.graph.initializer}
    nodes = list(m.graph.node)
    idx = next(i for i, n in enumerate(nodes) if n.name == node_name)
    node = nodes[idx]
    wname, in_axis = _weight_rows(node, inits)  # type: ignore[misc]
    w = numpy_helper.to_array(inits[wname])
    qw = fake_quant_weight(w, per_channel, channel_axis=1 - in_axis) if weight_fn is None else weight_fn(w, in_axis)
    new_w = f"{wname}.fq.{node_name}"
    m.graph.initializer.append(numpy_helper.from_array(qw, new_w))
    if weight_fn is not None:
        node.input[1] = new_w
        return m
    x = node.input[0]
    q, s, z, dq = (f"{node_name}.fq.{k}" for k in ("q", "scale", "zp", "x"))
    added = [helper.make_node("DynamicQuantizeLinear", [x], [q, s, z], name=f"{node_name}.fq.quant"),
             helper.make_node("DequantizeLinear", [q, s, z], [dq], name=f"{node_name}.fq.dequant")]
    node.input[0] = dq
    node.input[1] = new_w
    for k, n in enumerate(added):
        m.graph.node.insert(idx + k, n)
    return m


def _session(model: Any) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 0
    return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


def _run(sess: Any, feeds: Sequence[dict[str, np.ndarray]]) -> list[np.ndarray]:
    wanted = {i.name for i in sess.get_inputs()}
    name = sess.get_outputs()[0].name
    return [sess.run([name], {k: v for k, v in f.items() if k in wanted})[0] for f in feeds]


def relative_error(outs: Sequence[np.ndarray], refs: Sequence[np.ndarray],
                   feeds: Sequence[dict[str, np.ndarray]]) -> float:
    errs = []
    for o, r, f in zip(outs, refs, feeds):
        d = o.astype(np.float64) - r.astype(np.float64)
        ref = r.astype(np.float64)
        mask = f.get("attention_mask")
        if mask is not None and d.ndim == 3 and d.shape[:2] == mask.shape:
            d, ref = d * mask[..., None], ref * mask[..., None]
        errs.append(float(np.linalg.norm(d) / (np.linalg.norm(ref) or 1.0)))
    return float(np.mean(errs)) if errs else 0.0


def layer_sensitivity(model: Any, feeds: Sequence[dict[str, np.ndarray]], *, per_channel: bool = True,
                      nodes: Sequence[str] | None = None,
                      progress: Callable[[float, str], None] | None = None,
                      weight_fn: Callable[[np.ndarray, int], np.ndarray] | None = None) -> list[LayerSensitivity]:
    """Sensitivity of every weight layer (or of `nodes`), most sensitive first."""
    layers = [(n, op) for n, op in weight_layers(model) if nodes is None or n in set(nodes)]
    refs = _run(_session(model), feeds)
    out = []
    for i, (name, op) in enumerate(layers):
        if progress:
            progress(i / max(1, len(layers)), f"layer sensitivity {i + 1}/{len(layers)}")
        outs = _run(_session(quantise_one(model, name, per_channel, weight_fn)), feeds)
        out.append(LayerSensitivity(name, op, relative_error(outs, refs, feeds)))
    return sorted(out, key=lambda s: s.error, reverse=True)
