"""SmoothQuant-style smoothing, per-layer INT8 sensitivity and the calibration-range cache.

Hand-built ONNX graphs with a planted activation outlier channel (seconds), then the ort-int8
recipe with smoothing + output sensitivity + fusions on a tiny BERT encoder, run twice to show
the calibration statistics are reused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from relman.compress.quantize import calib_cache, sensitivity, smoothing  # noqa: E402

H = 32
OUTLIER = 5  # the planted outlier channel


def _graph(residual: bool = True, outlier: float = 60.0) -> onnx.ModelProto:
    """x → LayerNorm → {MatMul W1 → Relu → MatMul W2, MatMul W3} (+ residual Add of the LN output).

    The LN's gamma is large on one channel and W1/W3's matching rows small, so the function is
    ordinary but the activation entering W1/W3 has one outlier channel — what hurts INT8."""
    rng = np.random.default_rng(0)
    gamma = np.ones(H, np.float32)
    gamma[OUTLIER] = outlier
    beta = (rng.standard_normal(H) * 0.1).astype(np.float32)
    w1 = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(np.float32)
    w3 = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(np.float32)
    w1[OUTLIER] /= outlier
    w3[OUTLIER] /= outlier
    w2 = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((gamma, "gamma"), (beta, "beta"), (w1, "w1"), (w2, "w2"), (w3, "w3"))]
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln"], name="ln0", axis=-1),
             helper.make_node("MatMul", ["ln", "w1"], ["h1"], name="mm1"),
             helper.make_node("Relu", ["h1"], ["r1"], name="relu"),
             helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="mm2"),
             helper.make_node("MatMul", ["ln", "w3"], ["h3"], name="mm3"),
             helper.make_node("Add", ["h2", "h3"], ["s"], name="sum")]
    out = "s"
    if residual:
        nodes.append(helper.make_node("Add", ["s", "ln"], ["y"], name="residual"))
        out = "y"
    g = helper.make_graph(nodes, "planted", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t", H])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["b", "t", H])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(n: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((2, 8, H)).astype(np.float32)} for _ in range(n)]


def _run(model: onnx.ModelProto, feeds) -> list[np.ndarray]:
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [s.run(None, f)[0] for f in feeds]


def _dynamic_int8(model: onnx.ModelProto, tmp: Path, name: str) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = tmp / f"{name}.onnx", tmp / f"{name}.int8.onnx"
    onnx.save(model, str(src))
    quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8,
                     extra_options={"MatMulConstBOnly": True})
    return onnx.load(str(dst))


@pytest.mark.parametrize("residual", [True, False])
def test_smoothing_is_exact_in_fp32_and_helps_int8(tmp_path: Path, residual: bool) -> None:
    model = _graph(residual=residual)
    feeds = _feeds()
    targets = smoothing.find_targets(model)
    assert [(t.layernorm, sorted(t.consumers), t.other_consumers) for t in targets] == \
        [("ln0", ["mm1", "mm3"], 1 if residual else 0)]
    ranges = calib_cache.channel_absmax(model, feeds, ["ln"])
    assert int(np.argmax(ranges["ln"])) == OUTLIER  # the planted outlier is what the statistics see
    smoothed, report = smoothing.smooth_model(model, ranges, alpha=0.5)
    onnx.checker.check_model(smoothed)
    assert report.smoothed[0]["twin"] is residual  # post-LN: a smoothed twin, the residual keeps the original
    ref, got = _run(model, feeds), _run(smoothed, feeds)
    assert max(float(np.abs(a - b).max()) for a, b in zip(ref, got)) < 1e-5
    # after smoothing the activation entering mm1/mm3 has no outlier channel left to dominate its scale
    twin_out = "ln.smoothed" if residual else "ln"
    after = calib_cache.channel_absmax(smoothed, feeds, [twin_out])[twin_out]
    assert after.max() / np.median(after) < 0.25 * ranges["ln"].max() / np.median(ranges["ln"])
    err_plain = sensitivity.relative_error(_run(_dynamic_int8(model, tmp_path, "plain"), feeds), ref, feeds)
    err_smooth = sensitivity.relative_error(_run(_dynamic_int8(smoothed, tmp_path, "smooth"), feeds), ref, feeds)
    assert err_smooth < 0.6 * err_plain, (err_smooth, err_plain)


def test_smoothing_skips_layers_without_ranges_and_bad_alpha() -> None:
    model = _graph()
    same, report = smoothing.smooth_model(model, {}, alpha=0.5)
    assert report.smoothed == [] and report.skipped[0]["layernorm"] == "ln0"
    assert same.graph.SerializeToString() == model.graph.SerializeToString()
    with pytest.raises(ValueError, match="alpha"):
        smoothing.smooth_model(model, {}, alpha=1.5)


def test_sensitivity_finds_the_planted_layer_and_matches_real_int8(tmp_path: Path) -> None:
    model = _graph()
    feeds = _feeds()
    ranked = sensitivity.layer_sensitivity(model, feeds, per_channel=True)
    assert {r.node for r in ranked} == {"mm1", "mm2", "mm3"}
    # mm1 and mm3 read the outlier-dominated activation; mm2 reads a benign one
    assert ranked[-1].node == "mm2"
    assert ranked[-1].error < 0.3 * min(r.error for r in ranked[:2])
    # the simulation is what onnxruntime's dynamic INT8 really does to that one layer
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnx.save(model, str(tmp_path / "m.onnx"))
    ref = _run(model, feeds)
    for r in ranked:
        others = [n for n in ("mm1", "mm2", "mm3") if n != r.node]
        quantize_dynamic(str(tmp_path / "m.onnx"), str(tmp_path / "q.onnx"), per_channel=True,
                         weight_type=QuantType.QInt8, nodes_to_exclude=others, op_types_to_quantize=["MatMul"])
        real = sensitivity.relative_error(_run(onnx.load(str(tmp_path / "q.onnx")), feeds), ref, feeds)
        assert real == pytest.approx(r.error, rel=0.35, abs=1e-4), (r.node, real, r.error)


def test_calibration_cache_round_trip_and_corrupt_file(tmp_path: Path) -> None:
    cache = calib_cache.CalibrationCache(tmp_path / "c")
    k1 = calib_cache.cache_key("model-sha", "data-sha", {"samples": 64})
    assert k1 != calib_cache.cache_key("model-sha", "other-data", {"samples": 64})
    assert k1 != calib_cache.cache_key("model-sha", "data-sha", {"samples": 32})
    assert cache.get(k1) is None
    arrays = {"ln": np.arange(4, dtype=np.float32), "layer/with:odd name": np.asarray(0.25)}
    cache.put(k1, arrays)
    got = cache.get(k1)
    assert got is not None and set(got) == set(arrays) and np.array_equal(got["ln"], arrays["ln"])
    assert list(cache.root.iterdir()) == [cache.path(k1)]  # no temp file left behind
    cache.path(k1).write_bytes(b"not an npz")
    assert cache.get(k1) is None  # unreadable: recomputed, never trusted


def test_ort_int8_smoothing_sensitivity_fusion_on_tiny_bert(tiny_bert_encoder: Path, catalog) -> None:
    from relman.app.models import import_model
    from relman.compress import job
    from relman.jobs.context import JobContext

    parent = import_model(catalog, tiny_bert_encoder, "enc", task="feature-extraction")
    params = {"mode": "dynamic", "per_channel": True, "smooth": True, "sensitivity": "outputs",
              "keep_sensitive": 1, "fusion": True, "calibration_samples": 8}
    metas = []
    for _ in range(2):
        ctx = JobContext(catalog)
        try:
            res = job.run({"recipe": "ort-int8", "params": params, "parent_version_ids": [parent.id],
                           "evaluate": False}, ctx)
        finally:
            ctx.cleanup()
        metas.append(catalog.get_version(res["version_id"]).meta)
    first, second = metas
    assert first["smoothing"]["smoothed"] and first["smoothing"]["fp32_max_abs_diff"] < 1e-4
    top = first["sensitivity"]["top"]
    assert first["kept_float_nodes"] == [top[0]["node"]] and top[0]["error"] >= top[-1]["error"]
    assert first["fusion"]["applied"], first["fusion"]
    assert first["calibration_ranges"]["channel_absmax"]["reused"] is False
    assert second["calibration_ranges"]["channel_absmax"]["reused"] is True
    assert second["calibration_ranges"]["layer_sensitivity"]["reused"] is True
    assert second["sensitivity"]["top"] == top
