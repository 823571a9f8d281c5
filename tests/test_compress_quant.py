"""The format-changing recipes on tiny real models: ONNX export, PyTorch dynamic INT8, ONNX
Runtime INT8 (dynamic / static / per-channel / kept-float nodes), FP16 / BF16 (PyTorch and
ONNX), INT4 weight-only. Each child is loaded and run here, independently of the recipe's own
checks, and its recorded size / dtype change is compared with what is on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from relman.app.models import import_model
from relman.compress import job
from relman.errors import RecipeError
from relman.jobs.context import JobContext

from recipe_support import compress_job as compress  # noqa: E402


@pytest.fixture(scope="module")
def bert64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BERT classifier wide enough (hidden 64, FFN 256) that Linear weights dominate its size."""
    from relman.modelio import tiny

    return tiny.tiny_bert_classifier(tmp_path_factory.mktemp("bert64") / "m", hidden=64, intermediate=256)


def child_folder(catalog, version, tmp_path: Path) -> Path:
    folder = tmp_path / f"v{version.id}"
    return folder if folder.exists() else catalog.materialize(version.id, folder)


def metric(catalog, version_id: int, name: str) -> float:
    return catalog.metric_values(version_id)[name]


def assert_nothing_added(catalog, n_versions: int, shas: set[str]) -> None:
    assert len(catalog.versions()) == n_versions
    assert set(catalog.store.all_shas()) == shas
    assert catalog.orphan_blobs() == []
    assert catalog.conn.execute("SELECT COUNT(*) FROM pending_blobs").fetchone()[0] == 0


def initializer_bytes(path: Path) -> dict[str, int]:
    import onnx

    m = onnx.load(str(path))
    out: dict[str, int] = {}
    for init in m.graph.initializer:
        arr = onnx.numpy_helper.to_array(init)
        out[arr.dtype.name] = out.get(arr.dtype.name, 0) + arr.nbytes
    return out


def torch_logits(folder: Path, task: str, feeds: dict[str, np.ndarray], fmt: str = "hf") -> np.ndarray:
    import torch

    from relman.modelio.loading import load_torch_model

    model = load_torch_model(folder, task, "cpu", fmt=fmt)
    kwargs = {k: torch.from_numpy(v) for k, v in feeds.items()}
    if task == "causal-lm":
        kwargs["use_cache"] = False
    with torch.inference_mode():
        out = model(**kwargs, return_dict=True)
    return (out.last_hidden_state if task == "feature-extraction" else out.logits).float().numpy()


def ort_run(folder: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    s = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    names = {i.name for i in s.get_inputs()}
    return s.run(None, {k: v for k, v in feeds.items() if k in names})[0]


def text_feeds(batch: int, seq: int, vocab: int, pad: int = 0, seed: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=(batch, seq), dtype=np.int64)
    mask = np.ones_like(ids)
    if pad:
        mask[0, -pad:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


# -- ONNX export ------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["bert", "gpt2", "vit"])
def test_onnx_export_has_dynamic_axes_and_matches_pytorch(catalog, tmp_path, tiny_bert, tiny_gpt2, tiny_vit, which):
    src = {"bert": tiny_bert, "gpt2": tiny_gpt2, "vit": tiny_vit}[which]
    parent = import_model(catalog, src, which)
    child = compress(catalog, parent.id, "onnx-export")
    assert child.format == "onnx" and child.task == parent.task
    assert [p["parent_id"] for p in catalog.parents(child.id)] == [parent.id]
    folder = child_folder(catalog, child, tmp_path)
    assert (folder / "config.json").is_file()
    assert (folder / ("preprocessor_config.json" if which == "vit" else "tokenizer_config.json")).is_file()
    # shapes unlike the traced (2, 8) and the recipe's own checks: batch 4, length 19, padding
    if which == "vit":
        feeds = {"pixel_values": np.random.default_rng(3).standard_normal((4, 1, 8, 8)).astype(np.float32)}
    else:
        feeds = text_feeds(4, 19, 60, pad=6)
        if which == "gpt2":
            feeds.pop("token_type_ids")
    if which == "gpt2":  # a causal LM is exported with its key/value cache: fed an empty past here
        from relman.tasks.backends import OnnxBackend

        backend = OnnxBackend(folder, parent.task, "cpu", 1)
        assert "past_key_values.0.key" in backend.input_names and child.meta["onnx"]["kv_cache"] is True
        got = backend.run(backend.to_native(feeds))
    else:
        got = ort_run(folder, feeds)
    want = torch_logits(src, parent.task, feeds)
    diff = np.abs(got - want)
    if which == "gpt2":  # logits at padded positions are meaningless
        diff = diff * feeds["attention_mask"][..., None]
    assert got.shape == want.shape and diff.max() < 1e-4
    recorded = metric(catalog, child.id, "export_max_abs_diff")
    assert 0 <= recorded < 1e-4
    assert child.recipe["name"] == "onnx-export" and child.recipe["params"]["tolerance"] == 1e-4
    assert child.recipe["libraries"]["torch"] and child.recipe["libraries"]["onnxruntime"]


def test_onnx_export_over_tolerance_is_refused_and_stores_nothing(catalog, tiny_bert):
    parent = import_model(catalog, tiny_bert, "bert")
    shas = set(catalog.store.all_shas())
    with pytest.raises(RecipeError, match=r"differs from PyTorch by .* over the tolerance 1e-12; nothing stored"):
        compress(catalog, parent.id, "onnx-export", {"tolerance": "1e-12"})
    assert_nothing_added(catalog, 1, shas)


# -- PyTorch dynamic INT8 -------------------------------------------------------------------

def test_torch_int8_dynamic_child_loads_runs_and_is_smaller(catalog, tmp_path, bert64):
    parent = import_model(catalog, bert64, "bert")
    child = compress(catalog, parent.id, "torch-int8-dynamic", {"keep_float": "classifier"})
    assert child.format == "torch-int8" and child.dtype == "int8"
    folder = child_folder(catalog, child, tmp_path)
    feeds = text_feeds(3, 11, 60, pad=3)
    got = torch_logits(folder, "text-classification", feeds, fmt="torch-int8")
    want = torch_logits(bert64, "text-classification", feeds)
    assert np.abs(got - want).max() < 0.05  # INT8 noise, not a different model
    assert (got.argmax(1) == want.argmax(1)).all()
    from relman.modelio.loading import load_torch_model

    import torch

    modules = dict(load_torch_model(folder, "text-classification", "cpu", fmt="torch-int8").named_modules())
    assert type(modules["classifier"]) is torch.nn.Linear  # kept in float
    from torchao.quantization.quantize_.workflows.int8.int8_tensor import Int8Tensor

    query = modules["bert.encoder.layer.0.attention.self.query"].weight
    assert isinstance(query, Int8Tensor) and query.qdata.dtype == torch.int8  # torchao's int8 Linear
    assert query.act_quant_kwargs is not None  # activations quantised at run time (the default)
    stored = sorted(p.name for p in folder.iterdir())
    assert "int8_weights.safetensors" in stored and not [n for n in stored if n.endswith((".pt", ".bin"))]
    # 2 layers x (4 x 64x64 + 2 x 64x256) Linear weights go from 4 to 1 byte each
    assert child.size_bytes < 0.45 * parent.size_bytes
    assert metric(catalog, child.id, "quantized_layers") == 2 * 6 + 1  # + the pooler; classifier kept


def test_torch_int8_refuses_an_onnx_parent_before_running(catalog, tiny_bert):
    parent = import_model(catalog, tiny_bert, "bert")
    onnx_child = compress(catalog, parent.id, "onnx-export")
    shas = set(catalog.store.all_shas())
    with pytest.raises(RecipeError, match=r"cannot take bert@.*its format is 'onnx'"):
        compress(catalog, onnx_child.id, "torch-int8-dynamic")
    assert_nothing_added(catalog, 2, shas)


# -- ONNX Runtime INT8 ----------------------------------------------------------------------

def test_ort_int8_dynamic_quarters_the_weights(catalog, tmp_path, bert64):
    parent = import_model(catalog, bert64, "bert")
    exported = compress(catalog, parent.id, "onnx-export")
    child = compress(catalog, parent.id, "ort-int8")
    folder = child_folder(catalog, child, tmp_path)
    fp32 = initializer_bytes(child_folder(catalog, exported, tmp_path) / "model.onnx")
    q = initializer_bytes(folder / "model.onnx")
    ratio = sum(q.values()) / sum(fp32.values())
    assert 0.2 < ratio < 0.32, (ratio, q, fp32)  # INT8 ≈ 1/4 of the FP32 weights (+ scales, small float parts)
    assert q.get("int8", 0) > 0.7 * sum(q.values())
    assert metric(catalog, child.id, "weight_bytes_ratio") == pytest.approx(ratio, rel=0.02)
    feeds = text_feeds(3, 13, 60, pad=4)
    got, want = ort_run(folder, feeds), torch_logits(bert64, "text-classification", feeds)
    assert np.abs(got - want).max() < 0.05
    assert child.meta["mode"] == "dynamic" and "optimisation" in child.meta["preprocess"]
    assert child.recipe["params"]["mode"] == "dynamic"


def test_ort_int8_static_calibrates_on_the_registered_dataset(catalog, tmp_path, tiny_bert):
    from relman.app.datasets import register_demo_sentiment

    register_demo_sentiment(catalog, "sentiment", n=40)
    parent = import_model(catalog, tiny_bert, "bert")
    child = compress(catalog, parent.id, "ort-int8", {"mode": "static", "per_channel": "true",
                                                      "calibration_samples": "16"}, dataset="sentiment")
    calib = child.meta["calibration"]
    assert calib["source"] == "dataset" and calib["dataset"] == "sentiment" and calib["samples"] == 16
    assert child.recipe["params"]["dataset"] == "sentiment" and child.recipe["dataset"] == "sentiment"
    assert child.meta["op_types"] == ["MatMul", "Gemm", "Conv", "Gather"]  # weight ops, by default in static mode
    import onnx

    graph = onnx.load(str(child_folder(catalog, child, tmp_path) / "model.onnx")).graph
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) > 0  # QDQ
    feeds = text_feeds(2, 9, 60)
    assert ort_run(child_folder(catalog, child, tmp_path), feeds).shape == (2, 2)


def test_ort_int8_static_without_dataset_says_it_used_random_inputs(catalog, tiny_vit):
    parent = import_model(catalog, tiny_vit, "vit")
    child = compress(catalog, parent.id, "ort-int8", {"mode": "static"})
    assert child.meta["calibration"]["source"] == "synthetic"
    assert "random inputs" in child.meta["calibration"]["note"]


def test_ort_int8_keeps_named_nodes_and_op_types_in_float(catalog, tmp_path, tiny_bert):
    import onnx

    parent = import_model(catalog, tiny_bert, "bert")
    exported = compress(catalog, parent.id, "onnx-export")
    graph = onnx.load(str(child_folder(catalog, exported, tmp_path) / "model.onnx")).graph
    inits = {i.name for i in graph.initializer}
    target = next(n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in inits)
    child = compress(catalog, exported.id, "ort-int8", {"nodes_to_exclude": target, "op_types_to_exclude": "Gather",
                                                        "optimize": "false"})
    q = onnx.load(str(child_folder(catalog, child, tmp_path) / "model.onnx")).graph
    kept = [n for n in q.node if n.name == target]
    assert kept and kept[0].op_type == "MatMul"  # still the float MatMul
    assert not any(n.op_type == "MatMulInteger" and n.name.startswith(target) for n in q.node)
    gathers = [n for n in q.node if n.op_type == "Gather" and n.input[0] in {i.name for i in q.initializer}]
    assert gathers and all(next(i for i in q.initializer if i.name == g.input[0]).data_type == onnx.TensorProto.FLOAT
                           for g in gathers)
    assert child.meta["kept_float_nodes"] == [target] and child.meta["preprocess"] == "not requested"


def test_ort_int8_keep_sensitive_and_bad_node_names(catalog, tiny_bert):
    parent = import_model(catalog, tiny_bert, "bert")
    child = compress(catalog, parent.id, "ort-int8", {"keep_sensitive": "2"})
    assert len(child.meta["sensitive_nodes"]) == 2
    assert set(child.meta["sensitive_nodes"]) <= set(child.meta["kept_float_nodes"])
    n, shas = len(catalog.versions()), set(catalog.store.all_shas())
    with pytest.raises(RecipeError, match=r"nodes_to_exclude: no node named nosuchnode"):
        compress(catalog, parent.id, "ort-int8", {"nodes_to_exclude": "nosuchnode"})
    with pytest.raises(RecipeError, match=r"op type Softmax is not quantised in dynamic mode"):
        compress(catalog, parent.id, "ort-int8", {"op_types_to_exclude": "Softmax"})
    assert_nothing_added(catalog, n, shas)


# -- half precision -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_pytorch_child_keeps_its_dtype(catalog, tmp_path, bert64, dtype):
    import json

    import torch

    from relman.modelio.loading import load_torch_model

    parent = import_model(catalog, bert64, "bert")
    child = compress(catalog, parent.id, "half", {"dtype": dtype})
    assert child.format == "hf" and child.dtype == dtype
    folder = child_folder(catalog, child, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == dtype
    model = load_torch_model(folder, "text-classification", "cpu")
    assert {p.dtype for p in model.parameters()} == {getattr(torch, dtype)}
    assert 0.45 < child.size_bytes / parent.size_bytes < 0.56  # weights halve; tokenizer files stay
    assert metric(catalog, child.id, "weight_bytes_ratio") == pytest.approx(0.5)


def test_onnx_fp16_child_has_half_weights_and_float32_io(catalog, tmp_path, bert64):
    parent = import_model(catalog, bert64, "bert")
    child = compress(catalog, parent.id, "onnx-fp16")
    folder = child_folder(catalog, child, tmp_path)
    sizes = initializer_bytes(folder / "model.onnx")
    assert sizes.get("float16", 0) > 0.9 * sum(sizes.values())
    feeds = text_feeds(2, 7, 60)
    got, want = ort_run(folder, feeds), torch_logits(bert64, "text-classification", feeds)
    assert got.dtype == np.float32 and np.abs(got - want).max() < 1e-2
    assert metric(catalog, child.id, "weight_bytes_ratio") == pytest.approx(0.5, abs=0.01)


# -- INT4 weight-only -----------------------------------------------------------------------

def test_int4_quantises_the_lm_matmuls(catalog, tmp_path, tiny_gpt2):
    import onnx

    parent = import_model(catalog, tiny_gpt2, "gpt2")
    child = compress(catalog, parent.id, "int4-weight-only", {"block_size": "16"})
    folder = child_folder(catalog, child, tmp_path)
    graph = onnx.load(str(folder / "model.onnx")).graph
    n4 = sum(n.op_type == "MatMulNBits" for n in graph.node)
    assert n4 == 2 * 4 + 1  # per block: qkv, attn proj, fc, mlp proj (Gemm rewritten) + lm_head
    assert child.dtype == "int4" and child.meta["gemm_rewritten"] == 8
    feeds = text_feeds(2, 10, 200)
    feeds.pop("token_type_ids")
    got, want = ort_run(folder, feeds), torch_logits(tiny_gpt2, "causal-lm", feeds)
    assert got.shape == want.shape
    assert (got.argmax(-1) == want.argmax(-1)).mean() > 0.7
    assert metric(catalog, child.id, "weight_bytes_ratio") < 0.5


def test_int4_on_a_classifier_fails_clearly_with_no_child(catalog, tiny_bert):
    from relman.app.compress import queue_compression

    parent = import_model(catalog, tiny_bert, "bert")
    shas = set(catalog.store.all_shas())
    with pytest.raises(RecipeError, match=r"cannot take bert@1.0.0: its task is 'text-classification', the recipe "
                                          r"is for causal-lm"):
        queue_compression(catalog, "bert@1.0.0", "int4-weight-only", {})
    assert catalog.query("SELECT COUNT(*) AS n FROM jobs")[0]["n"] == 0
    with pytest.raises(RecipeError, match="causal-lm"):
        compress(catalog, parent.id, "int4-weight-only")
    assert_nothing_added(catalog, 1, shas)


def test_int4_on_a_graph_without_matmul_weights_fails_with_no_child(catalog, tmp_path):
    """A bigram "LM" (logits = a table looked up by token): no MatMul weight to quantise."""
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.random.default_rng(0).standard_normal((50, 50)).astype(np.float32), "table")
    graph = helper.make_graph([helper.make_node("Gather", ["table", "input_ids"], ["logits"])], "bigram",
                              [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"]),
                               helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", "s", 50])], [table])
    folder = tmp_path / "bigram"
    folder.mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(folder / "model.onnx"))
    (folder / "config.json").write_text(json.dumps({"vocab_size": 50, "n_positions": 16}))
    parent = import_model(catalog, folder, "bigram", task="causal-lm")
    shas = set(catalog.store.all_shas())
    with pytest.raises(RecipeError, match=r"bigram@1.0.0 has no MatMul weights to quantise to 4 bits"):
        compress(catalog, parent.id, "int4-weight-only")
    assert_nothing_added(catalog, 1, shas)


def test_ort_int8_takes_a_structurally_pruned_parent(catalog, tmp_path, bert64):
    """Recipes compose: a pruned "hf-reshaped" child exports and quantises like any HF model."""
    parent = import_model(catalog, bert64, "bert")
    pruned = compress(catalog, parent.id, "prune-structured", {"heads": "0.5", "ffn": "0.5", "epochs": "0"})
    assert pruned.format == "hf-reshaped"
    child = compress(catalog, pruned.id, "ort-int8")
    assert [p["parent_id"] for p in catalog.parents(child.id)] == [pruned.id]
    feeds = text_feeds(2, 9, 60)
    got = ort_run(child_folder(catalog, child, tmp_path), feeds)
    want = torch_logits(child_folder(catalog, pruned, tmp_path), "text-classification", feeds, fmt="hf-reshaped")
    assert np.abs(got - want).max() < 0.05
    weights = initializer_bytes(child_folder(catalog, child, tmp_path) / "model.onnx")
    assert weights["int8"] > 0.7 * sum(weights.values())
    assert metric(catalog, child.id, "weight_bytes_ratio") < 0.35


@pytest.mark.gpu
def test_half_precision_on_the_gpu_casts_there_and_runs_there(catalog, tmp_path, bert64):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from relman.modelio.loading import load_torch_model

    parent = import_model(catalog, bert64, "bert")
    ctx = JobContext(catalog, device="cuda:0")
    try:
        res = job.run({"recipe": "half", "params": {"dtype": "float16"}, "parent_version_ids": [parent.id],
                       "evaluate": False}, ctx)
    finally:
        ctx.cleanup()
    child = catalog.get_version(res["version_id"])
    assert child.meta["cast_on"] == "cuda:0" and child.dtype == "float16"
    assert metric(catalog, child.id, "max_abs_diff_vs_parent") < 0.01
    model = load_torch_model(child_folder(catalog, child, tmp_path), "text-classification", "cuda")
    feeds = text_feeds(2, 9, 60)
    with torch.inference_mode():
        out = model(**{k: torch.from_numpy(v).cuda() for k, v in feeds.items()}).logits
    assert out.dtype == torch.float16 and out.is_cuda
    want = torch_logits(bert64, "text-classification", feeds)
    assert np.abs(out.float().cpu().numpy() - want).max() < 0.01


def test_int4_of_a_with_cache_onnx_child_keeps_the_cache_and_checks_out(catalog, tmp_path, tiny_gpt2):
    """onnx-export writes a causal LM with its key/value cache; INT4 from that child must still
    verify (the checks feed an empty past) and keep the past/present inputs for generation."""
    import onnxruntime as ort

    parent = import_model(catalog, tiny_gpt2, "gpt2")
    exported = compress(catalog, parent.id, "onnx-export")
    child = compress(catalog, exported.id, "int4-weight-only", {"block_size": "16"})
    folder = child_folder(catalog, child, tmp_path)
    s = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert "past_key_values.0.key" in {i.name for i in s.get_inputs()}
    assert "present.0.key" in {o.name for o in s.get_outputs()}
    assert child.dtype == "int4"
