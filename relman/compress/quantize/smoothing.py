"""SmoothQuant-style activation smoothing on an ONNX graph, folded into the preceding LayerNorm.

Why: INT8 with per-tensor activation scales (what ONNX Runtime's dynamic quantisation does)
loses most where a few activation channels are much larger than the rest — transformers'
LayerNorm outputs have such outlier channels. For `y = LN(x) @ W`, scaling LayerNorm's gamma
and beta by 1/s (per channel) and W's rows by s gives the same y in exact arithmetic, while the
activation's range shrinks where it was large and the weight takes some of it (migration
strength `alpha`: s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)). The weights are then quantised
per output channel, which absorbs the row scaling well.

Only patterns where the fold is exact are rewritten: a `LayerNormalization` whose output feeds
`MatMul`/`Gemm` nodes with constant weights on their second input. When the LayerNorm output
also feeds something else (post-LN BERT: the residual Add), the LayerNorm is duplicated — the
original keeps feeding the residual, a smoothed copy feeds the MatMuls — so nothing but the
quantised layers' inputs changes. The smoothed FP32 model therefore matches the original up to
float rounding (tests hold it to 1e-5) before any quantisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class SmoothTarget:
    layernorm: str  # node name
    output: str  # the LayerNorm output tensor whose channel ranges are needed
    consumers: list[str]  # MatMul/Gemm node names reading it as input A
    other_consumers: int  # nodes that read it but are not smoothed


@dataclass
class SmoothReport:
    alpha: float
    smoothed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "smoothed": self.smoothed, "skipped": self.skipped}


def _weight_rows(node: Any, inits: dict[str, Any]) -> tuple[str, int] | None:
    """(initializer name, axis of the input channels) of a MatMul/Gemm's constant weight."""
    if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2 or node.input[1] not in inits:
        return None
    if node.op_type == "Gemm":
        attrs = {a.name: a for a in node.attribute}
        if "transA" in attrs and attrs["transA"].i:
            return None
        return node.input[1], (1 if "transB" in attrs and attrs["transB"].i else 0)
    return node.input[1], 0


def find_targets(model: Any) -> list[SmoothTarget]:
    """LayerNormalization nodes whose output feeds constant-weight MatMul/Gemm nodes."""
    inits = {i.name for i in model.graph.initializer}
    readers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, i))
    graph_outputs = {o.name for o in model.graph.output}
    targets = []
    for node in model.graph.node:
        if node.op_type != "LayerNormalization" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        if any(a.name == "axis" and a.i != -1 for a in node.attribute):
            continue  # normalised over more than the channel axis: the per-channel fold does not apply
        y = node.output[0]
        matmuls, others = [], 0
        for reader, idx in readers.get(y, []):
            if idx == 0 and _weight_rows(reader, inits) is not None:
                matmuls.append(reader.name)
            else:
                others += 1
        if y in graph_outputs:
            others += 1
        if matmuls:
            targets.append(SmoothTarget(node.name, y, matmuls, others))
    return targets


def smoothing_scales(act_absmax: np.ndarray, weight_absmax: np.ndarray, alpha: float) -> np.ndarray:
    """s_j = max|X_j|^alpha / max|W_j|^(1-alpha), 1 where either side is zero."""
    a = np.asarray(act_absmax, dtype=np.float64)
    w = np.asarray(weight_absmax, dtype=np.float64)
    s = np.ones_like(a)
    ok = (a > 0) & (w > 0)
    s[ok] = np.power(a[ok], alpha) / np.power(w[ok], 1.0 - alpha)
    return np.clip(s, 1e-4, 1e4)


def smooth_model(model: Any, act_absmax: dict[str, np.ndarray], alpha: float = 0.5) -> tuple[Any, SmoothReport]:
    """A smoothed copy of `model` (an onnx.ModelProto); `act_absmax[output]` is the per-channel
    max |x| of each target's LayerNorm output on calibration data (`calib_cache.channel_absmax`)."""
    import onnx
    from onnx import numpy_helper

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"smoothing alpha must be within [0, 1], got {alpha}")
    m = onnx.ModelProto()
    m.CopyFrom(model)
    report = SmoothReport(alpha=alpha)
    inits = {i.name: i for i in m.graph.initializer}
    nodes = {n.name: n for n in m.graph.node}
    init_users: dict[str, int] = {}
    for n in m.graph.node:
        for name in n.input:
            init_users[name] = init_users.get(name, 0) + 1
    for t in find_targets(m):
        ln = nodes[t.layernorm]
        stats = act_absmax.get(t.output)
        if stats is None:
            report.skipped.append({"layernorm": t.layernorm, "why": "no calibration ranges for its output"})
            continue
        weights = []
        for name in t.consumers:
            wname, axis = _weight_rows(nodes[name], inits)  # type: ignore[misc]
            weights.append((nodes[name], wname, axis, numpy_helper.to_array(inits[wname])))
        channels = stats.shape[-1]
        if any(w.shape[axis] != channels for _, _, axis, w in weights):
            report.skipped.append({"layernorm": t.layernorm, "why": "weight rows do not match the channels"})
            continue
        w_absmax = np.max([np.abs(w).max(axis=1 - axis) for _, _, axis, w in weights], axis=0)
        s = smoothing_scales(stats, w_absmax, alpha)
        gamma = numpy_helper.to_array(inits[ln.input[1]]).astype(np.float64)
        new_inputs = [ln.input[0], _add_init(m, f"{t.layernorm}.smooth_gamma", (gamma / s).astype(np.float32))]
        if len(ln.input) > 2 and ln.input[2]:
            beta = numpy_helper.to_array(inits[ln.input[2]]).astype(np.float64)
            new_inputs.append(_add_init(m, f"{t.layernorm}.smooth_beta", (beta / s).astype(np.float32)))
        if t.other_consumers:
            # the residual still needs the unsmoothed output: a smoothed twin feeds the MatMuls
            y = f"{t.output}.smoothed"
            twin = onnx.helper.make_node("LayerNormalization", new_inputs, [y], name=f"{t.layernorm}.smoothed")
            twin.attribute.extend(ln.attribute)
            m.graph.node.insert(list(m.graph.node).index(ln) + 1, twin)
            for node, _, _, _ in weights:
                node.input[0] = y
        else:
            del ln.input[:]
            ln.input.extend(new_inputs)
        for node, wname, axis, w in weights:
            scaled = (w.astype(np.float64) * (s[:, None] if axis == 0 else s[None, :])).astype(np.float32)
            if init_users.get(wname, 0) > 1:  # a shared weight gets its own smoothed copy
                node.input[1] = _add_init(m, f"{wname}.smoothed.{node.name}", scaled)
            else:
                inits[wname].CopyFrom(numpy_helper.from_array(scaled, wname))
        report.smoothed.append({"layernorm": t.layernorm, "matmuls": t.consumers, "twin": bool(t.other_consumers),
                                "scale_min": float(s.min()), "scale_max": float(s.max())})
    return m, report


def _add_init(model: Any, name: str, value: np.ndarray) -> str:
    from onnx import numpy_helper

    model.graph.initializer.append(numpy_helper.from_array(value, name))
    return name
