"""The trained LM is a model whose quality means something: it answers its planted facts, its
held-out perplexity is far below an untrained twin's, and its cache is keyed by content."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from relman.modelio import trained_lm as tlm

pytestmark = pytest.mark.heavy


def _greedy(model, tok, prompt: str, n: int) -> str:
    ids = tok(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=n, do_sample=False)
    return tok.decode(out[0, ids.input_ids.shape[1]:])


def test_answers_planted_facts_far_above_chance(trained_lm_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(trained_lm_dir)
    model = AutoModelForCausalLM.from_pretrained(trained_lm_dir).eval()
    facts = tlm.planted_facts()
    right = sum(_greedy(model, tok, f"Q: {q}\nA:", 3).strip().startswith(a) for q, a in facts)
    # 8 colours: chance is 1/8 (3 of 24)
    assert right >= 0.6 * len(facts), f"{right}/{len(facts)} planted facts answered"


def test_heldout_perplexity_far_below_untrained_twin(trained_lm_dir: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(trained_lm_dir)
    trained = AutoModelForCausalLM.from_pretrained(trained_lm_dir).eval()
    torch.manual_seed(0)
    untrained = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(trained_lm_dir)).eval()
    # docstrings the model never saw (tkinter's), 8 windows of 128 tokens
    text = "\n\n".join(tlm.heldout_documents(20_000))
    ids = tok(text, return_tensors="pt").input_ids[0, : 8 * 128].reshape(8, 128)

    def ppl(m) -> float:
        with torch.no_grad():
            return math.exp(float(m(input_ids=ids, labels=ids).loss))

    assert ppl(trained) < 0.1 * ppl(untrained), (ppl(trained), ppl(untrained))


def test_cache_is_keyed_by_recipe_and_reused(trained_lm_dir: Path, tmp_path: Path) -> None:
    meta = json.loads((trained_lm_dir / "relman-trained-lm.json").read_text())
    assert meta["hash"] == tlm.recipe_hash() and 5_000_000 > meta["params"] > 3_000_000
    assert tlm.trained_lm() == trained_lm_dir  # a second call trains nothing
    other = dataclasses.replace(tlm.DEFAULT_RECIPE, steps=tlm.DEFAULT_RECIPE.steps + 1)
    assert tlm.recipe_hash(other) != tlm.recipe_hash()
    # a leftover temporary folder from a killed build never counts as a finished model
    cache = tmp_path / "cache"
    (cache / f".trained-lm-{tlm.recipe_hash()}-dead").mkdir(parents=True)
    assert not list(cache.glob("trained-lm-*"))
