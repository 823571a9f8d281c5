"""Greedy generation of ONNX causal-LM versions (relman.tasks.onnx_generation).

The planted signal is the trained LM's planted facts: its torch model answers most of them
greedily, so the ONNX versions must produce the very same token ids, answer for answer, plus
longer free continuations (where a cache fed wrongly — a position off by one, a past not
carried — drifts within a few tokens). Three engines: relman's loop over its own with-cache
export, the same loop recomputing a cache-less export, and onnxruntime-genai's generator over
the builder's graph (with relman's loop over that graph too).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from relman.errors import EvaluationError
from relman.modelio.trained_lm import planted_facts

FREE = ["Return a new", "If the argument", "The socket"]  # continue past 24 tokens (no EOS)


def _prompts() -> list[str]:
    return [f"Q: {q}\nA:" for q, _ in planted_facts()]


@pytest.fixture(scope="module")
def torch_greedy(trained_lm_dir: Path) -> dict[tuple[str, int], list[int]]:
    """transformers' own greedy `generate` on the trained LM: the reference token ids."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(trained_lm_dir)
    model = AutoModelForCausalLM.from_pretrained(trained_lm_dir).eval()
    out = {}
    with torch.inference_mode():
        for prompt, n in [(p, 6) for p in _prompts()] + [(p, 24) for p in FREE]:
            ids = tok(prompt, return_tensors="pt")
            out[(prompt, n)] = model.generate(**ids, max_new_tokens=n, do_sample=False)[0, ids["input_ids"].shape[1]:] \
                .tolist()
    return out


@pytest.fixture(scope="module")
def kv_export(trained_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from relman.compress.export.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("kv") / "onnx"
    export_onnx(trained_lm_dir, out, "causal-lm", with_past=True)
    return out


def _check_same_as_torch(folder: Path, torch_greedy: dict, engine: str, expect: str) -> None:
    from relman.tasks.onnx_generation import generate_onnx

    facts = _prompts()
    answers = dict(planted_facts())
    gens = generate_onnx(folder, facts, max_new_tokens=6, engine=engine, threads=1)
    gens += generate_onnx(folder, FREE, max_new_tokens=24, engine=engine, threads=1)
    assert {g.engine for g in gens} == {expect}
    for g in gens:
        n = 6 if g.prompt in facts else 24
        assert g.token_ids == torch_greedy[(g.prompt, n)], g.prompt
        assert g.new_tokens == len(g.token_ids) and 0 < g.ttft_s <= g.total_s
    right = sum(g.text.strip().startswith(answers[q]) for g, (q, _) in zip(gens, planted_facts()))
    assert right >= 0.6 * len(facts)  # the trained LM's answers, so the tokens mean something
    free = [g for g in gens if g.prompt in FREE]
    assert all(g.new_tokens == 24 and g.stopped == "length" for g in free)  # long enough to drift
    assert all(g.decode_tokens_per_s and g.decode_tokens_per_s > 0 for g in free)


def test_kv_cache_export_generates_the_torch_models_tokens(kv_export, torch_greedy):
    import onnxruntime as ort

    s = ort.InferenceSession(str(kv_export / "model.onnx"), providers=["CPUExecutionProvider"])
    assert "past_key_values.0.key" in {i.name for i in s.get_inputs()}
    assert "present.0.key" in {o.name for o in s.get_outputs()}
    _check_same_as_torch(kv_export, torch_greedy, "auto", "relman-onnx-kv")


def test_kv_cache_export_scores_like_the_plain_graph(kv_export, trained_lm_dir):
    """The suites run a with-cache graph through OnnxBackend (empty past, positions): its logits
    over right-padded text must be the torch model's."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from relman.tasks.backends import OnnxBackend

    tok = AutoTokenizer.from_pretrained(trained_lm_dir)
    enc = tok(["Return the number of items.", "A"], padding=True, return_tensors="np")
    backend = OnnxBackend(kv_export, "causal-lm", "cpu", 1)
    got = backend.run(backend.to_native({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}))
    model = AutoModelForCausalLM.from_pretrained(trained_lm_dir).eval()
    with torch.inference_mode():
        want = model(input_ids=torch.from_numpy(enc["input_ids"]),
                     attention_mask=torch.from_numpy(enc["attention_mask"])).logits.numpy()
    mask = enc["attention_mask"][..., None]
    assert np.abs((got - want) * mask).max() < 1e-4


def test_cacheless_export_recomputes_and_still_matches(trained_lm_dir, torch_greedy, tmp_path):
    from relman.compress.export.onnx_export import export_onnx

    export_onnx(trained_lm_dir, tmp_path / "plain", "causal-lm")
    _check_same_as_torch(tmp_path / "plain", torch_greedy, "relman", "relman-onnx-recompute")


@pytest.fixture(scope="module")
def builder_fp32(trained_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from relman.compress.export import genai_export

    if not genai_export.genai_installed():
        pytest.skip("onnxruntime-genai is not installed")

    class Ctx:
        workdir = tmp_path_factory.mktemp("builder-work")

        def check_cancelled(self) -> None:
            pass

    out = tmp_path_factory.mktemp("builder") / "onnx"
    genai_export.run_builder(trained_lm_dir, out, "fp32", {}, Ctx())
    return out


def test_builder_child_through_onnxruntime_genai_generates_the_same_tokens(builder_fp32, torch_greedy):
    _check_same_as_torch(builder_fp32, torch_greedy, "auto", "onnxruntime-genai")


def test_relman_loop_runs_the_builder_graph_too(builder_fp32, torch_greedy):
    _check_same_as_torch(builder_fp32, torch_greedy, "relman", "relman-onnx-kv")


def test_bad_requests_are_one_clear_line(kv_export, tmp_path):
    from relman.tasks.onnx_generation import generate_onnx

    with pytest.raises(EvaluationError, match="engine must be one of"):
        generate_onnx(kv_export, ["x"], max_new_tokens=2, engine="fast")
    with pytest.raises(EvaluationError, match="max_new_tokens must be at least 1"):
        generate_onnx(kv_export, ["x"], max_new_tokens=0)
    with pytest.raises(EvaluationError, match="has no genai_config.json"):
        generate_onnx(kv_export, ["x"], max_new_tokens=2, engine="genai")


def test_generate_greedy_gives_the_same_answers_for_onnx_and_torch(kv_export, trained_lm_dir):
    """The one entry point the `generate` suite calls: an ONNX version's answers, newline stop
    included, equal the torch model's (so a flipped answer is the model's, not the loop's)."""
    from relman.modelio.trained_lm import fact_line, planted_facts
    from relman.tasks.generation import generate_greedy

    prompts = [fact_line(q, "").rsplit(" ", 1)[0] for q, _ in planted_facts()[:6]] + ["Return the number of"]
    torch_gens = generate_greedy(trained_lm_dir, "hf", prompts, max_new_tokens=12, stop_at_newline=True)
    onnx_gens = generate_greedy(kv_export, "onnx", prompts, max_new_tokens=12, stop_at_newline=True)
    assert [g.text for g in onnx_gens] == [g.text for g in torch_gens]
    assert [g.token_ids for g in onnx_gens] == [g.token_ids for g in torch_gens]
    assert any(g.stopped == "newline" for g in onnx_gens) and {g.engine for g in torch_gens} == {"torch"}
