"""Generation timing in the latency suite for causal LMs: time to first token and decode
tokens/s, paired against the parent in interleaved rounds. The planted signal: a child with six
times its parent's layers (same width, same tokenizer) must come out slower with an interval
that excludes 1, an identical copy with one that reaches it; an ONNX child records which
engine generated."""

from __future__ import annotations

import pytest

from relman.app.models import import_model

from recipe_support import compress_job as compress  # noqa: E402

pytestmark = pytest.mark.heavy


def _files(folder):
    return {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}


def _evaluate(catalog, version_id, **options):
    from relman.evaluate.job import run
    from relman.jobs.context import JobContext

    ctx = JobContext(catalog, device="cpu")
    try:
        return run({"version_id": version_id, "threads": 1, "suites": ["latency"], "batch_sizes": [1],
                    "seq_lens": [16], "options": {"min_samples": 10, "generate_tokens": 8,
                                                   "generation_rounds": 12, "generation_prompts": 4, **options}}, ctx)
    finally:
        ctx.cleanup()


def _metrics(catalog, version):
    return {r["name"]: r for r in catalog.metrics(version.id)}


@pytest.fixture(scope="module")
def lm_pair(tmp_path_factory):
    from relman.modelio import tiny

    d = tmp_path_factory.mktemp("lm-pair")
    return (tiny.tiny_decoder(d / "base", "llama", hidden=64, layers=1, heads=4, kv_heads=2),
            tiny.tiny_decoder(d / "deep", "llama", hidden=64, layers=6, heads=4, kv_heads=2))


def test_generation_ratios_find_a_deeper_child_and_not_an_identical_copy(catalog, lm_pair):
    base_dir, deep_dir = lm_pair
    base = import_model(catalog, base_dir, "lm", task="causal-lm")
    copy = catalog.add_version("lm", _files(base_dir), format="hf", task="causal-lm", parents=[(base.id, None)])
    deep = catalog.add_version("lm", _files(deep_dir), format="hf", task="causal-lm", parents=[(base.id, None)])
    for v in (copy, deep):
        _evaluate(catalog, v.id)
    m = _metrics(catalog, deep)
    tps = m["decode_tokens_per_s_ratio_vs_parent"]
    lo, hi = tps["context"]["interval"]
    assert lo <= tps["value"] <= hi and hi < 0.8, tps  # fewer tokens per second, the interval excludes 1
    ttft = m["ttft_ratio_vs_parent"]
    assert ttft["context"]["interval"][0] > 1.1, ttft  # and a later first token (interval excludes 1)
    ctx = tps["context"]
    assert ctx["engine"] == "torch" and ctx["reference_engine"] == "torch" and ctx["threads"] == 1
    assert ctx["new_tokens"] == 8 and ctx["prompt_tokens"] == 16 and ctx["rounds"] >= 5
    assert ctx["paired_with"] == [base.ref] and "load_avg_1m" in ctx
    assert m["decode_tokens_per_s"]["value"] > 0 and m["ttft_p50_ms"]["value"] > 0
    same = _metrics(catalog, copy)["decode_tokens_per_s_ratio_vs_parent"]["context"]["interval"]
    assert same[0] <= 1.1 and same[1] >= 0.9, same  # an identical copy: reaches 1, give or take 10 %


def test_an_onnx_child_generates_through_its_cache_beside_its_torch_parent(catalog, trained_lm_dir):
    parent = import_model(catalog, trained_lm_dir, "tlm", task="causal-lm")
    child = compress(catalog, parent.id, "onnx-export")
    _evaluate(catalog, child.id, generation_rounds=5)
    m = _metrics(catalog, child)
    ctx = m["decode_tokens_per_s_ratio_vs_parent"]["context"]
    assert ctx["engine"] == "relman-onnx-kv" and ctx["reference_engine"] == "torch"
    assert m["decode_tokens_per_s"]["value"] > 0 and m["ttft_ratio_vs_parent"]["value"] > 0


def test_generation_off_stores_no_generation_figures(catalog, lm_pair):
    v = import_model(catalog, lm_pair[0], "solo", task="causal-lm")
    _evaluate(catalog, v.id, generation=False)
    names = set(_metrics(catalog, v))
    assert "latency_p50_ms" in names and not any(n.startswith(("ttft", "decode")) for n in names)
