"""Weight-only INT4 of an ONNX graph one weight at a time, so memory stays at one tensor.

Why: onnxruntime's `MatMulNBitsQuantizer` (and ONNX Runtime GenAI's builder, which converts
its whole in-memory graph to a protobuf before calling it) hold every FP32 weight plus the
quantised copies at once. On a 0.5 B-parameter Qwen2 (1.98 GB of FP32 safetensors) that was
2.6x the weights for relman's path and 2.85x for the builder's INT4 path
(benchmarks/bench_half_billion.py), over the 2.5x target. Here only the weightless graph is
parsed; each MatMul / plain Gemm weight is read from the external data file, quantised with
onnxruntime's own blockwise kernel (`quantize_matmul_4bits`, the one `MatMulNBitsQuantizer`'s
default RTN uses, so the packed bytes are identical) and written straight to the new data file;
every other tensor is copied through in chunks.

Graph rewrites (the same nodes onnxruntime's quantizer and the GenAI builder emit):
- MatMul(A, W[K,N]) -> MatMulNBits(A, W_Q4[N, K/block, block/2], W_scales[N*K/block]).
- Gemm(A, B, C) with alpha = beta = 1 and no transposed A (GPT-2's Conv1D) -> MatMulNBits + Add;
  a transposed B is transposed once while read.
- Tied embeddings: a weight that also feeds Transpose -> Gather (the LM head's matrix used as the
  token embedding, as the GenAI builder writes Qwen2) becomes GatherBlockQuantized over the same
  4-bit rows (Reshape of the packed weight and scales), so the embedding is not kept in FP32.
Weights narrower than one block, excluded node names, and weights used in any other way stay
in float. Output: folder/model.onnx (+ model.onnx.data), temp names first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from relman.compress.export.onnx_stream import INLINE_BYTES, ModelWriter, TensorSource


@dataclass
class Int4Result:
    int4_matmuls: int = 0
    gemm_rewritten: int = 0
    tied_embeddings: int = 0
    kept_float: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def quantize_int4_streaming(model_path: Path, folder: Path, *, block_size: int = 32, symmetric: bool = True,
                            accuracy_level: int = 0, exclude: tuple[str, ...] = (),
                            progress: Callable[[int, int, str], None] | None = None,
                            check_cancelled: Callable[[], None] | None = None,
                            inline_below: int = INLINE_BYTES) -> Int4Result:
    """Write the 4-bit model of the ONNX file `model_path` as folder/model.onnx (+ .data)."""
    import onnx
    from onnx import helper
    from onnx.external_data_helper import uses_external_data
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits


    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    src = TensorSource(Path(model_path))
    inits = {t.name: t for t in graph.initializer}
    users: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)

    def weight_of(node: Any) -> tuple[str, bool] | None:
        """(initializer name, stored transposed) of a node this module can quantise."""
        if node.name in exclude or len(node.input) < 2 or node.input[1] not in inits:
            return None
        t = inits[node.input[1]]
        if len(t.dims) != 2 or t.data_type != onnx.TensorProto.FLOAT:
            return None
        if node.op_type == "MatMul":
            return node.input[1], False
        if node.op_type == "Gemm":
            a = _attrs(node)
            if float(a.get("alpha", 1.0)) == 1.0 and float(a.get("beta", 1.0)) == 1.0 and not a.get("transA", 0):
                return node.input[1], bool(a.get("transB", 0))
        return None

    targets = [(node, *w) for node in graph.node if node.op_type in ("MatMul", "Gemm") and (w := weight_of(node))]
    result = Int4Result()
    with ModelWriter(folder, inline_below) as writer:
        replaced: dict[int, list[Any]] = {}  # id(node) -> the nodes that take its place
        dropped: set[int] = set()
        new_inits: list[Any] = []
        quantised: set[str] = set()
        for i, (node, wname, transposed) in enumerate(targets, start=1):
            if check_cancelled is not None:
                check_cancelled()
            t = inits[wname]
            k, n = (t.dims[1], t.dims[0]) if transposed else (t.dims[0], t.dims[1])
            if k < block_size:
                result.kept_float.append(node.name)
                continue
            w = src.array(t)
            w = np.ascontiguousarray(w.T) if transposed else w
            k_blocks = (k + block_size - 1) // block_size
            if k_blocks * block_size != k:
                w = np.pad(w, ((0, k_blocks * block_size - k), (0, 0)))
            blob = block_size // 2
            packed = np.zeros((n, k_blocks, blob), dtype=np.uint8)
            scales = np.zeros((n, k_blocks), dtype=np.float32)
            zeros = np.zeros((n, (k_blocks + 1) // 2), dtype=np.uint8)
            quantize_matmul_4bits(packed, w, scales, zeros, block_size, n, k, symmetric)
            del w
            base = f"{wname}_{node.name or i}".replace("/", "_")
            q_init = writer.add(base + "_Q4", packed)
            s_init = writer.add(base + "_scales", scales.reshape(-1))
            inputs = [node.input[0], q_init.name, s_init.name]
            new_inits += [q_init, s_init]
            if not symmetric:
                z_init = writer.add(base + "_zero_points", zeros.reshape(-1))
                new_inits.append(z_init)
                inputs.append(z_init.name)
            kwargs: dict[str, Any] = {"K": int(k), "N": int(n), "bits": 4, "block_size": int(block_size)}
            if accuracy_level:
                kwargs["accuracy_level"] = int(accuracy_level)
            bias = node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]
            out = node.output[0] + "_matmul" if bias else node.output[0]
            nodes = [helper.make_node("MatMulNBits", inputs, [out], name=(node.name or base) + "_Q4",
                                      domain="com.microsoft", **kwargs)]
            if bias:
                nodes.append(helper.make_node("Add", [out, node.input[2]], [node.output[0]],
                                              name=(node.name or base) + "_Add"))
                result.gemm_rewritten += 1
            replaced[id(node)] = nodes
            result.int4_matmuls += 1
            # the same matrix as a tied token embedding: Transpose -> Gather over the 4-bit rows
            others = [u for u in users.get(wname, []) if u is not node]
            if (not transposed and symmetric and k_blocks * block_size == k and len(others) == 1
                    and others[0].op_type == "Transpose"
                    and list(_attrs(others[0]).get("perm", [1, 0])) == [1, 0]
                    and all(g.op_type == "Gather" and g.input[0] == others[0].output[0]
                            and int(_attrs(g).get("axis", 0)) == 0 for g in users.get(others[0].output[0], []))):
                tr = others[0]
                shape_q = writer.add(base + "_rows_shape", np.array([n, k_blocks * blob], dtype=np.int64), inline=True)
                shape_s = writer.add(base + "_scale_rows_shape", np.array([n, k_blocks], dtype=np.int64), inline=True)
                new_inits += [shape_q, shape_s]
                rows_q, rows_s = base + "_Q4_rows", base + "_scale_rows"
                emb_nodes = [helper.make_node("Reshape", [q_init.name, shape_q.name], [rows_q], name=base + "_RowsQ4"),
                             helper.make_node("Reshape", [s_init.name, shape_s.name], [rows_s], name=base + "_RowScales")]
                for g in users[tr.output[0]]:
                    emb_nodes.append(helper.make_node(
                        "GatherBlockQuantized", [rows_q, g.input[1], rows_s], list(g.output),
                        name=(g.name or base) + "_Q4", domain="com.microsoft", bits=4, block_size=int(block_size),
                        gather_axis=0, quantize_axis=1))
                    dropped.add(id(g))
                replaced[id(tr)] = emb_nodes
                result.tied_embeddings += 1
                quantised.add(wname)
            elif not others:
                quantised.add(wname)
            if progress is not None:
                progress(i, len(targets), node.name)
        # every initializer still used goes over as it is, streamed
        kept = []
        still_used = {name for node in graph.node if id(node) not in replaced and id(node) not in dropped
                      for name in node.input}
        for t in graph.initializer:
            if t.name in quantised and t.name not in still_used:
                continue
            if uses_external_data(t):
                writer.copy(t, src)
            elif t.ByteSize() > 1024 and t.data_type != onnx.TensorProto.INT64:  # int64: may be a shape
                arr = src.array(t)
                t.CopyFrom(writer.add(t.name, arr))
            kept.append(t)
        nodes = []
        for node in graph.node:
            if id(node) in dropped:
                continue
            nodes.extend(replaced.get(id(node), [node]))
        del graph.node[:]
        graph.node.extend(nodes)
        del graph.initializer[:]
        graph.initializer.extend(kept + new_inits)
        if not any(imp.domain == "com.microsoft" for imp in model.opset_import):
            model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
        result.files = writer.save(model)
    return result
