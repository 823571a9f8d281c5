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

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from relman.compress.export.onnx_stream import INLINE_BYTES, ModelWriter, TensorSource
from relman.errors import RecipeError


def _rows(t: Any, src: TensorSource, k: int) -> Callable[[int, int], np.ndarray]:
    """Rows [a, b) of a float [*, k] initializer, read from its external data without the rest."""
    from onnx.external_data_helper import uses_external_data

    if not uses_external_data(t):
        whole = src.array(t)
        return lambda a, b: whole[a:b]
    path, offset, _ = src.location(t)
    return lambda a, b: np.fromfile(path, dtype=np.float32, count=(b - a) * k,
                                    offset=offset + 4 * a * k).reshape(b - a, k)


def _tied_gather(w: np.ndarray, n: int, k: int, embeddings: dict[tuple[int, int], list[Any]],
                 src: TensorSource) -> str | None:
    """The name of an embedding [N, K] equal to this head weight's transpose, compared a block of
    rows at a time (so the check holds one weight plus a few MiB), or None."""
    step = max(1, (8 << 20) // max(1, 4 * k))
    for t in embeddings.get((n, k), []):
        rows = _rows(t, src, k)
        if all(np.array_equal(rows(a, min(a + step, n)), w[:, a:min(a + step, n)].T) for a in range(0, n, step)):
            embeddings[(n, k)].remove(t)
            return str(t.name)
    return None


@dataclass
class Int4Result:
    algo: str = "rtn"
    int4_matmuls: int = 0
    int8_matmuls: int = 0
    int8_nodes: list[str] = field(default_factory=list)
    gemm_rewritten: int = 0
    tied_embeddings: int = 0
    kept_float: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)  # filled by relman.compress.quantize.int4
    sensitivity: list[tuple[str, float]] = field(default_factory=list)


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def quantize_int4_streaming(model_path: Path, folder: Path, *, block_size: int = 32, symmetric: bool = True,
                            accuracy_level: int = 0, exclude: tuple[str, ...] = (), algo: str = "rtn",
                            int8_nodes: tuple[str, ...] = (), hessians: dict[str, np.ndarray] | None = None,
                            progress: Callable[[int, int, str], None] | None = None,
                            check_cancelled: Callable[[], None] | None = None,
                            inline_below: int = INLINE_BYTES) -> Int4Result:
    """Write the 4-bit model of the ONNX file `model_path` as folder/model.onnx (+ .data).

    `algo` picks the per-weight algorithm (relman.compress.quantize.int4_algos); `int8_nodes`
    are MatMul/Gemm node names written with 8-bit blocks instead; `hessians` (gptq) maps a
    node's input tensor name to the Hessian of its calibration inputs."""
    import onnx
    from onnx import helper
    from onnx.external_data_helper import uses_external_data

    from relman.compress.quantize.int4_algos import quantize_weight

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

    targets = [(node, *wt) for node in graph.node if node.op_type in ("MatMul", "Gemm") and (wt := weight_of(node))]
    int8_set = set(int8_nodes)
    # token embeddings a quantised LM head may turn out to duplicate: float [V, H] initializers
    # read only by row Gathers (relman's exporter writes a tied embedding as its own tensor)
    embeddings: dict[tuple[int, int], list[Any]] = {}
    for t in graph.initializer:
        readers = users.get(t.name, [])
        if (len(t.dims) == 2 and t.data_type == onnx.TensorProto.FLOAT and readers
                and all(u.op_type == "Gather" and u.input[0] == t.name and int(_attrs(u).get("axis", 0)) == 0
                        for u in readers)):
            embeddings.setdefault((int(t.dims[0]), int(t.dims[1])), []).append(t)
    result = Int4Result(algo=algo)
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
            bits = 8 if node.name in int8_set else 4
            hessian = hessians.get(node.input[0]) if hessians else None
            if algo == "gptq" and bits == 4 and hessian is None:
                raise RecipeError(f"gptq has no calibration statistics for the input of {node.name}")
            pw = quantize_weight(w, algo, block_size, symmetric, bits=bits, hessian=hessian)
            others = [u for u in users.get(wname, []) if u is not node]
            tied_rows = (_tied_gather(w, n, k, embeddings, src)
                         if not transposed and not others and pw.integer_zeros and k_blocks * block_size == k
                         else None)
            del w
            base = f"{wname}_{node.name or i}".replace("/", "_")
            q_init = writer.add(base + f"_Q{bits}", pw.packed)
            s_init = writer.add(base + "_scales", pw.scales.reshape(-1))
            inputs = [node.input[0], q_init.name, s_init.name]
            new_inits += [q_init, s_init]
            z_init = None
            if pw.zeros is not None:
                z_init = writer.add(base + "_zero_points", pw.zeros.reshape(-1))
                new_inits.append(z_init)
                inputs.append(z_init.name)
            if bits == 8:
                result.int8_matmuls += 1
                result.int8_nodes.append(node.name)
            kwargs: dict[str, Any] = {"K": int(k), "N": int(n), "bits": bits, "block_size": int(block_size)}
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
            result.int4_matmuls += bits == 4
            # the same matrix as a tied token embedding: Transpose -> Gather over the 4-bit rows
            tied = (not transposed and pw.integer_zeros and k_blocks * block_size == k and len(others) == 1
                    and others[0].op_type == "Transpose"
                    and list(_attrs(others[0]).get("perm", [1, 0])) == [1, 0]
                    and all(g.op_type == "Gather" and g.input[0] == others[0].output[0]
                            and int(_attrs(g).get("axis", 0)) == 0 for g in users.get(others[0].output[0], [])))
            gathers = users[others[0].output[0]] if tied else []
            if tied_rows is not None:
                gathers = users[tied_rows]  # relman's exporter: the embedding is a second, transposed copy
                quantised.add(tied_rows)
            if gathers:
                packed_cols = pw.packed.shape[1] * pw.packed.shape[2]
                shape_q = writer.add(base + "_rows_shape", np.array([n, packed_cols], dtype=np.int64), inline=True)
                shape_s = writer.add(base + "_scale_rows_shape", np.array([n, k_blocks], dtype=np.int64), inline=True)
                new_inits += [shape_q, shape_s]
                rows_q, rows_s = base + f"_Q{bits}_rows", base + "_scale_rows"
                emb_nodes = [helper.make_node("Reshape", [q_init.name, shape_q.name], [rows_q], name=base + "_RowsQ"),
                             helper.make_node("Reshape", [s_init.name, shape_s.name], [rows_s], name=base + "_RowScales")]
                g_inputs = [rows_q, "", rows_s]
                if z_init is not None:
                    assert pw.zeros is not None
                    shape_z = writer.add(base + "_zero_rows_shape", np.array(pw.zeros.shape, dtype=np.int64),
                                         inline=True)
                    new_inits.append(shape_z)
                    emb_nodes.append(helper.make_node("Reshape", [z_init.name, shape_z.name], [base + "_zero_rows"],
                                                      name=base + "_RowZeros"))
                    g_inputs.append(base + "_zero_rows")
                for j, g in enumerate(gathers):  # each Gather's place (its indices are computed by then)
                    g_inputs[1] = g.input[1]
                    gbq = helper.make_node("GatherBlockQuantized", list(g_inputs), list(g.output),
                                           name=(g.name or base) + f"_Q{bits}", domain="com.microsoft", bits=bits,
                                           block_size=int(block_size), gather_axis=0, quantize_axis=1)
                    replaced[id(g)] = [gbq] if tied or j else emb_nodes + [gbq]
                if tied:  # the Reshapes take the Transpose's place, before every Gather it fed
                    replaced[id(others[0])] = emb_nodes
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
