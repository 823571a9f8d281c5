"""Storing an exported ONNX model whose weights are in external data files (what the exporter
writes past the 2 GB protobuf limit): streamed into one aligned model.onnx.data, tensor by
tensor, the result loads and computes the same; hostile locations are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from relman.compress.export.onnx_export import ONNX_DATA, ONNX_FILE, move_onnx  # noqa: E402
from relman.errors import RecipeError  # noqa: E402


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((16, 24)).astype(np.float32)
    w2 = rng.standard_normal((24, 8)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["y"])],
                          "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 8])],
                          [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_per_tensor_files_become_one_data_file(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    onnx.save_model(_model(), str(scratch / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=False,
                    size_threshold=0)
    assert len(list(scratch.iterdir())) == 3  # the graph and one file per tensor
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    ref = _run(scratch / "model.onnx", x)
    written = move_onnx(scratch / "model.onnx", tmp_path / "out")
    assert written == [ONNX_FILE, ONNX_DATA]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [ONNX_FILE, ONNX_DATA]
    np.testing.assert_array_equal(_run(tmp_path / "out" / ONNX_FILE, x), ref)
    graph = onnx.load(str(tmp_path / "out" / ONNX_FILE), load_external_data=False)
    offsets = [int({e.key: e.value for e in t.external_data}["offset"]) for t in graph.graph.initializer]
    assert all(o % 4096 == 0 for o in offsets)


def test_inline_model_is_copied_and_hostile_location_refused(tmp_path: Path) -> None:
    onnx.save_model(_model(), str(tmp_path / "inline.onnx"))
    assert move_onnx(tmp_path / "inline.onnx", tmp_path / "a") == [ONNX_FILE]
    scratch = tmp_path / "s"
    scratch.mkdir()
    m = _model()
    onnx.save_model(m, str(scratch / "model.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    g = onnx.load(str(scratch / "model.onnx"), load_external_data=False)
    for t in g.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../../etc/passwd"
    onnx.save_model(g, str(scratch / "model.onnx"))
    with pytest.raises(RecipeError, match="outside the export folder"):
        move_onnx(scratch / "model.onnx", tmp_path / "b")
    assert not (tmp_path / "b" / ONNX_FILE).exists() and not (tmp_path / "b" / ONNX_DATA).exists()


def test_large_parent_is_exported_in_a_child_process(tiny_gpt2: Path, tmp_path: Path, monkeypatch) -> None:
    """Past the size threshold the export runs in its own process (its memory returns to the
    OS when it exits); the result and the refusal message are the same as in-process."""
    from relman.compress.export import onnx_export

    monkeypatch.setattr(onnx_export, "SEPARATE_EXPORT_BYTES", 0)
    path, diff = onnx_export.onnx_source(tiny_gpt2, "hf", "causal-lm", tmp_path / "a")
    assert path == tmp_path / "a" / "exported" / ONNX_FILE and path.is_file() and diff is not None and diff < 1e-4
    with pytest.raises(RecipeError, match="cannot export a model of task 'no-such-task'"):
        onnx_export.onnx_source(tiny_gpt2, "hf", "no-such-task", tmp_path / "b")
    # ONNX Runtime's check runs here, after the exporting process exited: a refused export
    # leaves neither the model nor the reference outputs behind
    with pytest.raises(RecipeError, match="differs from PyTorch by"):
        onnx_export.onnx_source(tiny_gpt2, "hf", "causal-lm", tmp_path / "c", tolerance=-1.0)
    assert not (tmp_path / "c" / "exported").exists() and list((tmp_path / "c").glob("*.npz")) == []
