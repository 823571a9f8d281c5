"""Which exporter writes a causal LM's ONNX graph, and how relman's ONNX backend feeds a
generation graph's cache: the pieces of the GenAI builder path that need no model (the builder
itself runs in tests/test_genai_export.py)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from relman.compress.export import genai_export
from relman.errors import EvaluationError, RecipeError


@pytest.mark.fast
def test_empty_cache_keeps_fixed_dims_and_zeroes_the_past_length():
    from relman.tasks.backends import empty_cache, is_cache_input

    cache = empty_cache(["batch_size", 2, "past_sequence_length", 16], 3, np.float32)
    assert cache.shape == (3, 2, 0, 16) and cache.dtype == np.float32
    named = empty_cache(["batch_size", 2, "past_sequence_length", "kv_cache_dim"], 1, np.float16, {"kv_cache_dim": 64})
    assert named.shape == (1, 2, 0, 64) and named.dtype == np.float16
    with pytest.raises(EvaluationError, match="cannot size the key/value cache input: its dimension 'mystery'"):
        empty_cache(["batch_size", "mystery", "past_sequence_length", 16], 1, np.float32)
    assert is_cache_input("past_key_values.0.key") and is_cache_input("past.3.value")
    assert not is_cache_input("position_ids") and not is_cache_input("attention_mask")


@pytest.mark.fast
def test_cache_dims_come_from_genai_config_before_config_json(tmp_path):
    from relman.tasks.backends import cache_dims

    (tmp_path / "config.json").write_text('{"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2}')
    assert cache_dims(tmp_path)["kv_cache_dim"] == 16 and cache_dims(tmp_path)["num_key_value_heads"] == 2
    (tmp_path / "genai_config.json").write_text('{"model": {"decoder": {"head_size": 32, "num_key_value_heads": 1}}}')
    assert cache_dims(tmp_path)["kv_cache_dim"] == 32 and cache_dims(tmp_path)["num_kv_heads"] == 1


@pytest.mark.fast
@pytest.mark.parametrize("arch,fmt,requested,expected", [
    ("Qwen2ForCausalLM", "hf", "auto", "genai"),
    ("LlamaForCausalLM", "hf", "relman", "relman"),
    ("GPT2LMHeadModel", "hf", "auto", "relman"),
    ("Qwen2ForCausalLM", "onnx", "auto", "relman"),
])
def test_choose_exporter(tmp_path, arch, fmt, requested, expected):
    (tmp_path / "config.json").write_text('{"architectures": ["%s"]}' % arch)
    src = SimpleNamespace(folder=tmp_path, format=fmt, version=SimpleNamespace(ref="m@1.0.0"))
    if expected == "genai" and not genai_export.genai_installed():
        expected = "relman"  # auto falls back when the package is missing
    assert genai_export.choose_exporter(src, requested) == expected


@pytest.mark.fast
def test_choose_exporter_refuses_what_it_cannot_do(tmp_path):
    (tmp_path / "config.json").write_text('{"architectures": ["Qwen2ForCausalLM"]}')
    src = SimpleNamespace(folder=tmp_path, format="onnx", version=SimpleNamespace(ref="m@1.0.1"))
    with pytest.raises(RecipeError, match="reads a Hugging Face folder and m@1.0.1 is 'onnx'"):
        genai_export.choose_exporter(src, "genai")
    with pytest.raises(RecipeError, match="exporter must be one of"):
        genai_export.choose_exporter(src, "optimum")
