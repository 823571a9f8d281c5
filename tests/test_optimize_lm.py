"""`optimize` for language models: the INT4 grid (algorithm × block size × INT8 layers), every
candidate tried and kept with its figures, those within a perplexity budget ranked by the paired
latency ratio then size — on the small trained LM, whose perplexity means something."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from recipe_support import compress_job as compress

from relman.app.compress import queue_optimization
from relman.app.datasets import register_dataset
from relman.app.models import import_model
from relman.compress import optimize
from relman.errors import RecipeError
from relman.jobs.context import JobContext

pytestmark = pytest.mark.heavy
FAST = {"latency_budget_s": 0.3, "latency_samples": 5, "seq_len": 16}


def _texts(path: Path, docs: list[str], n: int) -> Path:
    path.write_text("\n".join(json.dumps({"text": d[:400]}) for d in docs[:n] if d.strip()) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lm(trained_lm_dir, tmp_path_factory):
    from relman.catalog import open_catalog
    from relman.modelio.trained_lm import heldout_documents

    root = tmp_path_factory.mktemp("optimize-lm")
    cat = open_catalog(root / "catalog")
    hf = import_model(cat, trained_lm_dir, "lm", task="causal-lm")
    parent = compress(cat, hf.id, "onnx-export", {"tolerance": "1e-3"})
    register_dataset(cat, _texts(root / "heldout.jsonl", heldout_documents(), 24), "heldout", label_col=None)
    yield SimpleNamespace(cat=cat, parent=parent, hf=hf)
    cat.close()


def test_the_lm_plan_is_the_int4_grid(lm):
    with_text = optimize.plan_candidates(lm.parent, dataset="heldout", dataset_kind="text")
    params = [c["params"] for c in with_text]
    assert {c["recipe"] for c in with_text} == {"int4-weight-only"}
    assert {p["algo"] for p in params} == {"rtn", "k_quant", "hqq", "gptq"}
    assert {p["block_size"] for p in params} == {32, 128}
    assert any(p.get("int8_layers") == ["lm_head"] for p in params)
    assert any(p.get("int8_sensitive") == 2 for p in params)
    assert all(p["dataset"] == "heldout" for p in params if p["algo"] == "gptq")  # calibrated on the text
    no_text = optimize.plan_candidates(lm.parent, dataset="mcq", dataset_kind="mcq")
    assert "gptq" not in {c["params"]["algo"] for c in no_text}  # nothing to calibrate on


def test_lm_budget_errors_are_one_line_and_queue_nothing(lm, catalog, tiny_bert):
    before = lm.cat.query("SELECT COUNT(*) AS n FROM jobs")[0]["n"]
    with pytest.raises(RecipeError, match="needs --dataset"):
        queue_optimization(lm.cat, lm.parent.ref)
    with pytest.raises(RecipeError, match="fraction"):
        queue_optimization(lm.cat, lm.parent.ref, dataset="heldout", max_ppl_increase=3.0)
    assert lm.cat.query("SELECT COUNT(*) AS n FROM jobs")[0]["n"] == before
    bert = import_model(catalog, tiny_bert, "bert")
    with pytest.raises(RecipeError, match="language-model budget"):
        queue_optimization(catalog, bert.ref, max_ppl_increase=0.03)


def test_every_candidate_is_tried_and_those_within_budget_are_ranked(lm):
    job_id = queue_optimization(lm.cat, lm.parent.ref, dataset="heldout", max_ppl_increase=0.5, max_candidates=3,
                                latency_budget_s=0.3)
    params = lm.cat.query("SELECT params FROM jobs WHERE id = ?", [job_id])[0]["params"]
    params = json.loads(params) if isinstance(params, str) else params
    assert params["search"] == "all" and params["max_drop"] == 0.5 and len(params["candidates"]) == 3
    ctx = JobContext(lm.cat)
    try:
        res = optimize.run({**params, **FAST}, ctx)
    finally:
        ctx.cleanup()
    assert res["stopped"] == "every candidate tried" and not res["failed"]
    assert len(res["tried"]) == 3  # none skipped because an earlier one met the budget
    assert res["quality_metric"] == "quality/perplexity"
    for f in res["tried"]:
        assert f["quality"] is not None and f["drop"] is not None and f["size_bytes"] < res["parent"]["size_bytes"]
        assert f["latency_ratio"] is not None  # paired with the parent in the same job
    within = res["within_budget"]
    assert [w["ref"] for w in within] == [f.ref for f in optimize.rank_within_budget(
        [optimize.Figures(**{k: v for k, v in f.items()}) for f in res["tried"]], 0.5, "latency")]
    keys = [(w["latency_p50_ratio_vs_parent"], w["size_bytes"]) for w in within]
    assert keys == sorted(keys)
    assert all(w["drop"] <= 0.5 for w in within)
    # a budget no 4-bit model meets leaves them all kept, none ranked, no best
    figs = [optimize.Figures(**f) for f in res["tried"]]
    tight = min(f.drop for f in figs) - 1e-9
    assert optimize.rank_within_budget(figs, tight, "latency") == []
    by_size = optimize.rank_within_budget(figs, 1.0, "size")
    assert [f.size_bytes for f in by_size] == sorted(f.size_bytes for f in by_size)
    if res["best"] is not None:
        assert res["best"] == next(w["ref"] for w in within
                                   if next(f for f in res["tried"] if f["ref"] == w["ref"])["meets"])


def test_the_cli_reads_a_percentage_budget():
    import click

    from relman.commands.compress_cmds import _fraction

    assert _fraction("3%") == pytest.approx(0.03) and _fraction("0.03") == pytest.approx(0.03)
    for bad in ("three", "nan", "inf%"):
        with pytest.raises(click.BadParameter):
            _fraction(bad)
