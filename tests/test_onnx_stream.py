"""The streaming ONNX rewrites on small hand-built graphs with external data. INT4: the same
bytes as onnxruntime's in-memory MatMulNBitsQuantizer, Gemm rewritten with its bias, a tied
embedding turned into GatherBlockQuantized rows equal to the quantised matrix's columns, bad
input (truncated or escaping external data) refused with nothing left behind. FP16: the same
model as onnxruntime's float16 converter on the loaded graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from relman.compress.quantize.int4_stream import quantize_int4_streaming  # noqa: E402
from relman.errors import RecipeError  # noqa: E402

K, N, V = 64, 48, 100


def _save(model, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    return path


def _run(path: Path, feeds: dict) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, feeds)


def lm_like(seed: int = 0):
    """x → MatMul(W1) → Gemm(B transposed, + C) → y; ids → Transpose(E) → Gather → e, where E is
    also the weight of a MatMul (a tied LM head: h → MatMul(E) → logits)."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(K, K)).astype(np.float32)
    b = rng.normal(size=(N, K)).astype(np.float32)
    c = (20 * rng.normal(size=(N,))).astype(np.float32)  # large: a lost bias would show
    e = rng.normal(size=(K, V)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="/mm"),
             helper.make_node("Gemm", ["h", "b", "c"], ["y"], name="/gemm", transB=1),
             helper.make_node("MatMul", ["x", "e"], ["logits"], name="/lm_head/MatMul"),
             helper.make_node("Transpose", ["e"], ["e_t"], name="/embed/Transpose", perm=[1, 0]),
             helper.make_node("Gather", ["e_t", "ids"], ["emb"], name="/embed/Gather", axis=0)]
    graph = helper.make_graph(
        nodes, "lm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", K]),
                      helper.make_tensor_value_info("ids", TensorProto.INT64, ["m"])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ("y", "logits", "emb")],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b, "b"), (c, "c"), (e, "e"))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), (w1, b, c, e)


def test_matmul_bytes_equal_onnxruntimes_quantizer_and_the_tied_embedding_reads_the_same_rows(tmp_path):
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model, (w1, b, c, e) = lm_like()
    src = _save(model, tmp_path / "src")
    result = quantize_int4_streaming(src, tmp_path / "out", block_size=32)
    assert (result.int4_matmuls, result.gemm_rewritten, result.tied_embeddings) == (3, 1, 1)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "out" / "model.onnx")).graph.node]
    assert ops.count("MatMulNBits") == 3 and "GatherBlockQuantized" in ops and "Gemm" not in ops
    assert "Transpose" not in ops and "Gather" not in ops  # no FP32 copy of the embedding is left
    names = {t.name for t in onnx.load(str(tmp_path / "out" / "model.onnx")).graph.initializer}
    assert not names & {"w1", "b", "e"}

    eye = np.eye(K, dtype=np.float32)
    ids = np.array([0, 7, 99, 7], dtype=np.int64)
    y, logits, emb = _run(tmp_path / "out" / "model.onnx", {"x": eye, "ids": ids})
    # identity rows read the dequantised matrices back: the embedding rows are the LM head's columns
    np.testing.assert_array_equal(emb, logits.T[ids])
    def rel(a: np.ndarray, ref: np.ndarray) -> float:
        return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))

    assert rel(logits, e) < 0.12  # 4-bit, 32 weights a block: ~8 % of the weights' RMS
    # two 4-bit layers in a row (the Gemm's B read transposed, its bias added): a wrong layout
    # would be off by ~100 %, not by two layers' rounding
    assert rel(y, eye @ w1 @ b.T + c) < 0.1

    # the same with the weights in model.onnx.data (as for any large model): shape inputs stay
    # in the graph, where onnxruntime's shape inference needs them
    big = quantize_int4_streaming(src, tmp_path / "out-ext", block_size=32, inline_below=0)
    assert big.files == ["model.onnx", "model.onnx.data"]
    for a, b_ in zip(_run(tmp_path / "out-ext" / "model.onnx", {"x": eye, "ids": ids}), (y, logits, emb)):
        np.testing.assert_array_equal(a, b_)

    # the MatMul alone, against onnxruntime's own (in-memory) quantizer: identical outputs
    mm = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["x", "e"], ["logits"], name="/lm_head/MatMul")], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", K])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], [numpy_helper.from_array(e, "e")]),
        opset_imports=[helper.make_opsetid("", 17)])
    q = MatMulNBitsQuantizer(onnx.ModelProto.FromString(mm.SerializeToString()), block_size=32, is_symmetric=True)
    q.process()
    onnx.save_model(q.model.model, str(tmp_path / "ort.onnx"))
    ours = quantize_int4_streaming(_save(mm, tmp_path / "mm"), tmp_path / "mm-out", block_size=32)
    assert ours.int4_matmuls == 1
    x = np.random.default_rng(1).normal(size=(5, K)).astype(np.float32)
    np.testing.assert_array_equal(_run(tmp_path / "mm-out" / "model.onnx", {"x": x})[0],
                                  _run(tmp_path / "ort.onnx", {"x": x})[0])


def test_excluded_and_narrow_weights_stay_float(tmp_path):
    model, _ = lm_like()
    src = _save(model, tmp_path / "src")
    result = quantize_int4_streaming(src, tmp_path / "out", block_size=128, exclude=("/gemm",))
    assert result.int4_matmuls == 0 and "/mm" in result.kept_float  # K = 64 < one block of 128
    ops = [n.op_type for n in onnx.load(str(tmp_path / "out" / "model.onnx")).graph.node]
    assert "Gemm" in ops and "MatMulNBits" not in ops


def test_truncated_or_escaping_external_data_is_refused_with_nothing_left(tmp_path):
    model, _ = lm_like()
    src = _save(model, tmp_path / "src")
    data = tmp_path / "src" / "weights.bin"
    data.write_bytes(data.read_bytes()[: K * K * 2])  # half of the first weight
    with pytest.raises(RecipeError, match="truncated"):
        quantize_int4_streaming(src, tmp_path / "out", block_size=32)
    assert list((tmp_path / "out").iterdir()) == []

    m = onnx.load(str(src), load_external_data=False)
    for t in m.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = "../../etc/passwd"
    onnx.save_model(m, str(src))
    with pytest.raises(RecipeError, match="points outside the model's folder"):
        quantize_int4_streaming(src, tmp_path / "out2", block_size=32)
    assert list((tmp_path / "out2").iterdir()) == []


def test_fp16_streamed_equals_the_converter_on_the_loaded_graph(tmp_path):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from relman.compress.quantize.half import half_graph_streaming
    from relman.compress.export.onnx_stream import TensorSource

    model, _ = lm_like()
    src = _save(model, tmp_path / "src")
    whole = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save_model(whole, str(tmp_path / "whole.onnx"))
    half_graph_streaming(src, tmp_path / "out", [], "m@1.0.0")
    out = onnx.load(str(tmp_path / "out" / "model.onnx"))
    assert {t.name: t.data_type for t in out.graph.initializer} == {t.name: t.data_type for t in whole.graph.initializer}
    assert TensorSource(tmp_path / "out" / "model.onnx").array(out.graph.initializer[0]).dtype == np.float16
    feeds = {"x": np.random.default_rng(2).normal(size=(3, K)).astype(np.float32), "ids": np.array([5, 0], np.int64)}
    for a, b in zip(_run(tmp_path / "out" / "model.onnx", feeds), _run(tmp_path / "whole.onnx", feeds)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(RecipeError, match="no float32 weights"):  # already half: refused by name
        half_graph_streaming(tmp_path / "out" / "model.onnx", tmp_path / "again", [], "m@1.0.1")
