"""The per-weight INT4 algorithms and the streaming pass's tied-embedding rewrite on hand-built
graphs: what each algorithm stores is exactly what onnxruntime's MatMulNBits computes with
(its dequantised weight reproduces the kernel's output), GPTQ's Hessian-guided rounding beats
RTN on the inputs it was calibrated on, and a token embedding stored as a separate transposed
copy of the LM head (relman's exporter) is replaced by GatherBlockQuantized over the head's
rows only when the copy is exact and the zero points are integers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402  (after importorskip)

from relman.compress.quantize import int4_algos as algos  # noqa: E402
from relman.compress.quantize.int4_stream import quantize_int4_streaming  # noqa: E402

K, N, V = 64, 48, 100


def _session(model) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model if isinstance(model, str) else model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def _matmul_nbits(pw: algos.PackedWeight, k: int, n: int, x: np.ndarray) -> np.ndarray:
    inits = [numpy_helper.from_array(pw.packed, "B"), numpy_helper.from_array(pw.scales.reshape(-1), "S")]
    inputs = ["X", "B", "S"]
    if pw.zeros is not None:
        inits.append(numpy_helper.from_array(pw.zeros.reshape(-1), "Z"))
        inputs.append("Z")
    node = helper.make_node("MatMulNBits", inputs, ["Y"], domain="com.microsoft", K=k, N=n, bits=pw.bits,
                            block_size=pw.block)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    return _session(model).run(None, {"X": x})[0]


@pytest.mark.parametrize("algo,symmetric,bits", [("rtn", True, 4), ("rtn", False, 4), ("rtn", True, 8),
                                                 ("rtn", False, 8), ("k_quant", False, 4), ("hqq", False, 4),
                                                 ("gptq", True, 4), ("gptq", False, 4)])
def test_what_each_algorithm_stores_is_what_matmulnbits_computes(algo, symmetric, bits):
    rng = np.random.default_rng(1)
    w = rng.normal(size=(K + 16, N)).astype(np.float32)  # K = 80: the last block of 32 is padded
    x = rng.normal(size=(7, K + 16)).astype(np.float32)
    h = 2 * x.T.astype(np.float64) @ x / len(x)
    pw = algos.quantize_weight(w, algo, 32, symmetric, bits=bits, hessian=h)
    assert pw.packed.shape == (N, 3, 32 * bits // 8) and pw.scales.shape == (N, 3)
    y = _matmul_nbits(pw, K + 16, N, x)
    np.testing.assert_allclose(y, x @ algos.dequantize(pw, K + 16), rtol=1e-4, atol=1e-4)
    err = np.abs(y - x @ w).mean() / np.abs(x @ w).mean()
    assert err < (0.01 if bits == 8 else 0.15)


def test_gptq_beats_round_to_nearest_on_its_calibration_inputs():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(K, N)).astype(np.float32)
    # correlated input channels, as real activations are: GPTQ's error feedback has something to use
    # (on independent channels it can only match RTN)
    x = rng.normal(size=(256, K)).astype(np.float32) @ rng.normal(size=(K, K)).astype(np.float32)
    h = 2 * x.T.astype(np.float64) @ x / len(x)
    ref = x @ w
    errors = {a: float(np.linalg.norm(x @ algos.dequantize(algos.quantize_weight(w, a, 32, True, hessian=h), K) - ref))
              for a in ("rtn", "gptq")}
    assert errors["gptq"] < 0.8 * errors["rtn"], errors


def _tied_lm(tmp_path: Path, *, exact: bool = True) -> tuple[Path, np.ndarray]:
    """ids -> Gather(E [V, K]) -> emb; x -> MatMul(W [K, V]) -> logits, with E a separate copy of
    W transposed (as relman's exporter writes a tied embedding); `exact=False` changes one value."""
    rng = np.random.default_rng(3)
    w = rng.normal(size=(K, V)).astype(np.float32)
    e = np.ascontiguousarray(w.T)
    if not exact:
        e[7, 3] += 1e-3
    nodes = [helper.make_node("Gather", ["embed", "ids"], ["emb"], name="/embed/Gather", axis=0),
             helper.make_node("MatMul", ["x", "head"], ["logits"], name="/lm_head/MatMul")]
    graph = helper.make_graph(
        nodes, "lm", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["m"]),
                      helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", K])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ("emb", "logits")],
        [numpy_helper.from_array(e, "embed"), numpy_helper.from_array(w, "head")])
    folder = tmp_path / ("src" if exact else "src-inexact")
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path),
                    save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
    return path, w


@pytest.mark.parametrize("algo,symmetric,int8", [("rtn", True, False), ("rtn", False, False),
                                                 ("k_quant", False, False), ("rtn", True, True)])
def test_a_separate_tied_embedding_copy_becomes_the_heads_quantised_rows(tmp_path, algo, symmetric, int8):
    src, w = _tied_lm(tmp_path)
    out = tmp_path / "out"
    result = quantize_int4_streaming(src, out, block_size=32, symmetric=symmetric, algo=algo,
                                     int8_nodes=("/lm_head/MatMul",) if int8 else (), inline_below=0)
    assert result.tied_embeddings == 1
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    ops = [n.op_type for n in model.graph.node]
    assert "GatherBlockQuantized" in ops and "Gather" not in ops
    assert "embed" not in {t.name for t in model.graph.initializer}  # the float copy is gone
    ids = np.array([0, 7, 99, 7], dtype=np.int64)
    x = np.random.default_rng(4).normal(size=(3, K)).astype(np.float32)
    emb, logits = _session(str(out / "model.onnx")).run(None, {"ids": ids, "x": x})
    pw = algos.quantize_weight(w, algo, 32, symmetric, bits=8 if int8 else 4)
    deq = algos.dequantize(pw, K)  # [K, V]: the head's rounded weight
    np.testing.assert_allclose(emb, deq.T[ids], rtol=1e-5, atol=1e-5)  # rows of the same rounded matrix
    np.testing.assert_allclose(logits, x @ deq, rtol=1e-4, atol=1e-4)
    assert np.abs(emb - w.T[ids]).max() < (0.05 if int8 else 0.6)


def test_an_inexact_copy_or_float_zero_points_keep_the_embedding_in_float(tmp_path):
    src, _ = _tied_lm(tmp_path, exact=False)
    result = quantize_int4_streaming(src, tmp_path / "out", block_size=32)
    assert result.tied_embeddings == 0 and result.int4_matmuls == 1
    model = onnx.load(str(tmp_path / "out" / "model.onnx"), load_external_data=False)
    assert "embed" in {t.name for t in model.graph.initializer}
    exact, w = _tied_lm(tmp_path)
    hqq = quantize_int4_streaming(exact, tmp_path / "out-hqq", block_size=32, algo="hqq")
    assert hqq.tied_embeddings == 0  # GatherBlockQuantized takes integer zero points only
    ids = np.array([1, 2], dtype=np.int64)
    emb, _ = _session(str(tmp_path / "out-hqq" / "model.onnx")).run(None, {"ids": ids, "x": np.zeros((1, K), np.float32)})
    np.testing.assert_array_equal(emb, w.T[ids])  # the float embedding, untouched
