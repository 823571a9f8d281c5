"""Explain where decisions are made (issue 27, item 4): a compress job with a dataset adds the
explain suite to its child's evaluation, and a suite that would overrun its time budget queues
itself as its own evaluate job instead of holding up the others."""

from __future__ import annotations

import pytest

from explain_support import planted_text_rows, train_text_classifier, write_csv

pytestmark = pytest.mark.heavy  # trains a tiny model, runs the compress and evaluate jobs


def run_job(catalog, kind: str, params: dict):
    from relman.jobs.context import JobContext

    if kind == "compress":
        from relman.compress.job import run
    else:
        from relman.evaluate.job import run
    ctx = JobContext(catalog, device="cpu")
    try:
        return run(params, ctx)
    finally:
        ctx.cleanup()


def queued(catalog, kind: str = "evaluate") -> list[dict]:
    from relman.jobs import queue

    return [j for j in queue.list_jobs(catalog) if j["kind"] == kind and j["status"] == "queued"]


def test_a_compress_job_with_a_dataset_explains_its_child_against_the_parent(catalog, tmp_path):
    from relman.app.datasets import register_dataset
    from relman.app.models import import_model

    folder = train_text_classifier(tmp_path / "m", planted_text_rows(240, seed=0))
    parent = import_model(catalog, folder, "p")
    register_dataset(catalog, write_csv(tmp_path / "d.csv", planted_text_rows(40, seed=3)), "planted")
    result = run_job(catalog, "compress", {"recipe": "torch-int8-dynamic", "params": {},
                                           "parent_version_ids": [parent.id], "dataset": "planted"})
    [ev] = queued(catalog)
    ev["params"]["threads"] = 1
    assert ev["id"] == result["evaluation_job"] and "explain" in ev["params"]["suites"]
    assert ev["params"]["options"]["explain_budget_s"] > 0
    run_job(catalog, "evaluate", ev["params"])
    m = {r["name"]: r for r in catalog.metrics(result["version_id"])}
    assert m["explain_agreement_vs_parent"]["value"] >= 0.7  # INT8 keeps the planted token on top
    assert m["explain_agreement_vs_parent"]["context"]["parent"] == parent.ref
    assert "accuracy" in m and "explain_randomisation_agreement" in m
    # over its budget, the suite stores nothing and queues itself as its own job (no budget)
    child = result["version_id"]
    before = len(catalog.metrics(child, latest=False))
    run_job(catalog, "evaluate", {"version_id": child, "dataset": "planted", "suites": ["explain"],
                                  "parent_version_id": parent.id, "threads": 1,
                                  "options": {"explain_examples": 8, "explain_budget_s": 1e-6}})
    assert len(catalog.metrics(child, latest=False)) == before
    [again] = [j for j in queued(catalog) if j["id"] != ev["id"]]  # (ev was run here, not by a runner)
    assert again["params"]["suites"] == ["explain"] and again["params"]["options"]["explain_budget_s"] == 0
    assert again["params"]["parent_version_id"] == parent.id
    # under a budget the suite is best effort: an explainer that cannot run (IG on INT8) stores
    # nothing and the job's other suites still land
    n_explain = sum(1 for m in catalog.metrics(child, latest=False) if m["suite"] == "explain")
    n_quality = sum(1 for m in catalog.metrics(child, latest=False) if m["suite"] == "quality")
    run_job(catalog, "evaluate", {"version_id": child, "dataset": "planted", "suites": ["quality", "explain"],
                                  "parent_version_id": parent.id, "threads": 1,
                                  "options": {"explain_method": "ig", "explain_budget_s": 60}})
    after = catalog.metrics(child, latest=False)
    assert sum(1 for m in after if m["suite"] == "explain") == n_explain
    assert sum(1 for m in after if m["suite"] == "quality") > n_quality
