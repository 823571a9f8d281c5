"""ONNX Runtime GenAI's model builder as the export path for the LLM families it supports.

On tiny Qwen2 / Llama models built from configs: the builder's FP32 graph (fused attention,
rotary positions, a KV cache) must give the parent's logits through relman's own ONNX backend,
which feeds an empty cache and positions — so perplexity, fidelity and latency of a GenAI child
are measured like any other version. INT4 through `exporter=auto` must take the builder for
these families and relman's exporter for the others; a refused or cancelled export leaves
nothing behind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from relman.app.models import import_model
from relman.compress.export import genai_export
from relman.errors import RecipeError
from relman.tasks.backends import OnnxBackend

from recipe_support import compress_job as compress  # noqa: E402
from recipe_support import evaluate_job as evaluate  # noqa: E402

pytestmark = pytest.mark.skipif(not genai_export.genai_installed(), reason="onnxruntime-genai is not installed")


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from relman.modelio import tiny

    return tiny.tiny_decoder(tmp_path_factory.mktemp("qwen2") / "m", "qwen2")


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from relman.modelio import tiny

    return tiny.tiny_decoder(tmp_path_factory.mktemp("llama") / "m", "llama", hidden=64, heads=4, kv_heads=4)


def graph_ops(catalog, version, tmp_path: Path) -> list[str]:
    import onnx

    folder = catalog.materialize(version.id, tmp_path / f"v{version.id}")
    return [n.op_type for n in onnx.load(str(folder / "model.onnx"), load_external_data=False).graph.node]


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_builder_fp32_graph_scores_exactly_like_its_parent(catalog, tmp_path, family, request):
    """The planted check: perplexity over right-padded batches and top-1 agreement 1.0 hold only
    if the backend feeds the cache and positions the way the graph expects."""
    from relman.app.datasets import register_demo_text

    folder = request.getfixturevalue(family)
    parent = import_model(catalog, folder, family, task="causal-lm")
    child = compress(catalog, parent.id, "onnx-export", {"exporter": "genai"})
    assert child.format == "onnx" and child.meta["exporter"] == "onnxruntime-genai"
    ops = graph_ops(catalog, child, tmp_path)
    assert "GroupQueryAttention" in ops  # the builder's fused graph, not relman's export
    values = catalog.metric_values(child.id)
    assert values["max_abs_diff_vs_parent"] < 1e-4 and values["top1_agreement_vs_parent"] == 1.0
    register_demo_text(catalog, n=12)
    for v in (parent, child):
        evaluate(catalog, v.id, dataset="text", suites=["quality"] + (["fidelity"] if v is child else []),
                 options={"eval_batch_size": 5})
    p, c = catalog.metric_values(parent.id), catalog.metric_values(child.id)
    assert c["perplexity"] == pytest.approx(p["perplexity"], rel=1e-4)
    assert c["tokens"] == p["tokens"] > 100
    assert c["agreement"] == 1.0


def test_int4_auto_takes_the_builder_for_qwen2_and_is_evaluated_paired(catalog, tmp_path, qwen2):
    from relman.app.datasets import register_demo_text

    parent = import_model(catalog, qwen2, "qwen", task="causal-lm")
    child = compress(catalog, parent.id, "int4-weight-only")  # exporter defaults to auto
    assert child.dtype == "int4" and child.meta["exporter"] == "onnxruntime-genai"
    assert child.meta["builder_options"]["block_size"] == "32"
    ops = graph_ops(catalog, child, tmp_path)
    assert ops.count("MatMulNBits") >= 2 * 4  # q/k/v (maybe packed), o, gate/up, down per layer
    assert "GroupQueryAttention" in ops
    assert "GatherBlockQuantized" in ops and "Transpose" not in ops  # the tied embedding is 4-bit too
    values = catalog.metric_values(child.id)
    assert values["top1_agreement_vs_parent"] > 0.5
    assert values["weight_bytes_ratio"] < 0.6
    # relman quantises the builder's FP32 graph itself (half the builder's peak memory): the
    # logits must be exactly those of the builder's own `-p int4` model
    own = tmp_path / "builder-int4"
    genai_export.run_builder(qwen2, own, "int4", {}, _CancelAfter(tmp_path, 10**9))
    (own / "config.json").write_bytes((qwen2 / "config.json").read_bytes())
    feeds = genai_export.check_inputs(qwen2, "causal-lm")
    ours = OnnxBackend(tmp_path / f"v{child.id}", "causal-lm", "cpu", 1)
    theirs = OnnxBackend(own, "causal-lm", "cpu", 1)
    for f in feeds:
        real = f["attention_mask"] > 0
        np.testing.assert_array_equal(ours.run(ours.to_native(f))[real], theirs.run(theirs.to_native(f))[real])
    register_demo_text(catalog, n=12)
    evaluate(catalog, parent.id, dataset="text", suites=["quality"], options={"eval_batch_size": 4})
    evaluate(catalog, child.id, dataset="text", suites=["quality", "fidelity", "latency"], batch_sizes=[1],
             seq_lens=[16], options={"eval_batch_size": 4, "min_samples": 20, "warmup": 2, "time_budget_s": 30})
    p, c = catalog.metric_values(parent.id), catalog.metric_values(child.id)
    assert np.isfinite(c["perplexity"]) and abs(c["perplexity"] / p["perplexity"] - 1) < 0.25
    assert 0.5 < c["agreement"] <= 1.0
    assert c["latency_p50_ratio_vs_parent"] > 0  # timed against the PyTorch parent in one process


def test_fp16_auto_takes_the_builder_too(catalog, qwen2):
    parent = import_model(catalog, qwen2, "qwen", task="causal-lm")
    child = compress(catalog, parent.id, "onnx-fp16")
    assert child.meta["exporter"] == "onnxruntime-genai" and child.meta["precision"] == "fp16"
    values = catalog.metric_values(child.id)
    assert values["top1_agreement_vs_parent"] == 1.0 and values["max_abs_diff_vs_parent"] < 0.05
    assert 0.45 < values["weight_bytes_ratio"] < 0.55


def test_relman_exporter_when_asked_and_for_families_the_builder_lacks(catalog, llama, tiny_gpt2):
    parent = import_model(catalog, llama, "llama", task="causal-lm")
    child = compress(catalog, parent.id, "int4-weight-only", {"exporter": "relman", "block_size": "16"})
    assert "exporter" not in child.meta and child.meta["int4_matmuls"] > 0
    gpt = import_model(catalog, tiny_gpt2, "gpt", task="causal-lm")
    auto = compress(catalog, gpt.id, "int4-weight-only", {"block_size": "16"})
    assert "exporter" not in auto.meta


def test_builder_asked_for_an_architecture_it_lacks_is_refused_with_no_child(catalog, tmp_path, tiny_gpt2):
    gpt = import_model(catalog, tiny_gpt2, "gpt", task="causal-lm")
    n, shas = len(catalog.versions()), set(catalog.store.all_shas())
    with pytest.raises(RecipeError, match="architecture 'GPT2LMHeadModel' is not one relman exports"):
        compress(catalog, gpt.id, "int4-weight-only", {"exporter": "genai"})
    with pytest.raises(RecipeError, match="exporter 'genai' is for causal LMs"):
        bert = import_model(catalog, _bert(tmp_path), "bert")
        compress(catalog, bert.id, "onnx-fp16", {"exporter": "genai"})
    assert len(catalog.versions()) == n + 1  # only the BERT import
    assert set(catalog.store.all_shas()) >= shas
    assert catalog.conn.execute("SELECT COUNT(*) FROM pending_blobs").fetchone()[0] == 0


def _bert(tmp_path: Path) -> Path:
    from relman.modelio import tiny

    return tiny.tiny_bert_classifier(tmp_path / "bert-src")


class _CancelAfter:
    """A job context whose cancellation arrives at the n-th check (the builder is then running)."""

    def __init__(self, workdir: Path, n: int) -> None:
        self.workdir, self.n = workdir, n

    def check_cancelled(self) -> None:
        self.n -= 1
        if self.n <= 0:
            raise KeyboardInterrupt("cancelled")


def test_a_cancelled_builder_is_killed_and_writes_no_model(tmp_path, qwen2):
    import psutil

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        genai_export.run_builder(qwen2, out, "int4", {}, _CancelAfter(tmp_path, 2))
    assert not (out / "model.onnx").exists()
    builders = [p for p in psutil.Process().children(recursive=True)
                if "onnxruntime_genai.models.builder" in " ".join(p.cmdline())]
    assert builders == []


def test_a_failing_builder_is_one_clear_line_and_writes_no_model(tmp_path, qwen2):
    """A folder the builder cannot read (here: its weights are gone) fails with the builder's own
    last error line, not a traceback, and no model file is left."""
    broken = tmp_path / "no-weights"
    broken.mkdir()
    for p in qwen2.iterdir():
        if not p.name.endswith(".safetensors"):
            (broken / p.name).write_bytes(p.read_bytes())
    with pytest.raises(RecipeError, match=r"^ONNX Runtime GenAI's builder failed \(int4\): ") as err:
        genai_export.run_builder(broken, tmp_path / "out", "int4", {}, _CancelAfter(tmp_path, 10**9))
    assert "\n" not in str(err.value) and len(str(err.value)) < 400
    assert not (tmp_path / "out" / "model.onnx").exists()
