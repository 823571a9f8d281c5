"""The "compress" job through the real queue, runner and worker processes: the child with its
lineage, recipe record and automatic evaluation; checks before queueing; kill -9 and cancel
leaving nothing behind; the CLI commands."""

from __future__ import annotations

import json
import os
import signal

import pytest

from relman.app.compress import queue_compression
from relman.app.models import import_model
from relman.errors import DuplicateVersion, NotFound, RecipeError
from relman.jobs import queue
from relman.jobs.queue import get_job
from relman.jobs.testing import HoldPoint, drive_until, job_status


def jobs_count(catalog) -> int:
    return catalog.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]


def all_finished(catalog):
    return lambda: all(r["status"] in queue.FINISHED for r in queue.list_jobs(catalog))


def assert_clean(catalog, job_id: int) -> None:
    assert catalog.orphan_blobs() == []
    assert catalog.conn.execute("SELECT COUNT(*) FROM pending_blobs").fetchone()[0] == 0
    assert not queue.workdir_for(catalog, job_id).exists()
    assert catalog.verify_audit() == []


def test_compress_job_stores_the_child_and_queues_its_evaluation(catalog, make_runner, tiny_bert):
    from relman.app.datasets import register_demo_sentiment

    register_demo_sentiment(catalog, "sentiment", n=24)
    parent = import_model(catalog, tiny_bert, "bert")
    job_id = queue_compression(catalog, "bert@1.0.0", "ort-int8", {"per_channel": "yes"}, device="cpu",
                               dataset="sentiment")
    assert get_job(catalog, job_id)["params"]["params"]["per_channel"] is True  # parsed before queueing
    drive_until(make_runner(), all_finished(catalog), 180, "the compression and its evaluation")
    job = get_job(catalog, job_id)
    assert job["status"] == "succeeded", job["error"]
    child = catalog.get_version(job["result_version_id"])
    assert child.ref == "bert@1.0.1" == job["result"]["ref"] and child.format == "onnx"
    assert [(p["parent_id"], p["relation"]) for p in catalog.parents(child.id)] == [(parent.id, "ort-int8")]
    assert child.recipe["name"] == "ort-int8" and child.recipe["params"]["per_channel"] is True
    assert set(child.recipe["libraries"]) >= {"torch", "transformers", "onnxruntime", "onnx"}
    event = [e for e in catalog.events() if e["kind"] == "compress"][-1]
    assert event["version"] == "1.0.1" and event["payload"]["job"] == job_id
    assert event["payload"]["parents"] == ["bert@1.0.0"]
    evals = [j for j in queue.list_jobs(catalog) if j["kind"] == "evaluate"]
    assert [j["id"] for j in evals] == [job["result"]["evaluation_job"]]
    assert evals[0]["parent_job_id"] == job_id and evals[0]["status"] == "succeeded", evals[0]["error"]
    values = {(m["suite"], m["name"]) for m in catalog.metrics(child.id)}
    assert {("size", "size_bytes"), ("latency", "latency_p50_ms"), ("quality", "accuracy"),
            ("fidelity", "agreement"), ("compress", "max_abs_diff_vs_parent")} <= values
    assert_clean(catalog, job_id)


@pytest.mark.parametrize("ending", ["kill -9", "cancel"])
def test_a_killed_or_cancelled_compression_leaves_no_version_and_no_blob(catalog, make_runner, tiny_bert, ending,
                                                                         monkeypatch, tmp_path):
    """The job is held just before its commit (the test's hold point, not a race with a fast
    machine), then killed or cancelled there."""
    hold = HoldPoint(monkeypatch, "compress.before-commit", tmp_path)
    parent = import_model(catalog, tiny_bert, "bert")
    shas = set(catalog.store.all_shas())
    job_id = queue_compression(catalog, "bert@1.0.0", "ort-int8", {"mode": "static"}, device="cpu")
    r = make_runner(grace_s=2.0, kill_after_s=1.0)
    drive_until(r, lambda: hold.reached(catalog, job_id), 120, "the recipe's output, held before the commit")
    assert any(queue.workdir_for(catalog, job_id).iterdir())  # parents laid out, work in progress
    if ending == "kill -9":
        os.kill(get_job(catalog, job_id)["pid"], signal.SIGKILL)
    else:
        queue.request_cancel(catalog, job_id)
    drive_until(r, lambda: job_status(catalog, job_id) in queue.FINISHED, 60, "the job to end")
    job = get_job(catalog, job_id)
    if ending == "kill -9":
        assert job["status"] == "failed" and "killed by signal 9" in job["error"], job["error"]
    else:
        assert job["status"] == "cancelled", job
    assert [v.id for v in catalog.versions()] == [parent.id] and job["result_version_id"] is None
    assert set(catalog.store.all_shas()) == shas
    assert_clean(catalog, job_id)


def test_bad_requests_are_refused_before_any_job_is_queued(catalog, tiny_bert):
    import_model(catalog, tiny_bert, "bert")
    with pytest.raises(RecipeError, match=r"unknown recipe 'quantise' \(known: .*ort-int8"):
        queue_compression(catalog, "bert@1.0.0", "quantise", {})
    with pytest.raises(RecipeError, match=r"recipe 'ort-int8' has no parameter bits \(it takes: mode, per_channel"):
        queue_compression(catalog, "bert@1.0.0", "ort-int8", {"bits": "4"})
    with pytest.raises(RecipeError, match=r"parameter 'mode' must be one of dynamic, static, got 'fast'"):
        queue_compression(catalog, "bert@1.0.0", "ort-int8", {"mode": "fast"})
    with pytest.raises(RecipeError, match=r"parameter 'per_channel' expects bool, got 'maybe'"):
        queue_compression(catalog, "bert@1.0.0", "ort-int8", {"per_channel": "maybe"})
    with pytest.raises(RecipeError, match=r"recipe 'onnx-export' takes one parent, got 2"):
        import_model(catalog, tiny_bert, "bert")
        queue_compression(catalog, "bert@1.0.0,bert@1.1.0", "onnx-export", {})
    with pytest.raises(NotFound, match=r"unknown dataset 'nope'"):
        queue_compression(catalog, "bert@1.0.0", "ort-int8", {"mode": "static"}, dataset="nope")
    with pytest.raises(DuplicateVersion, match=r"model 'bert' already has version 1.1.0"):
        queue_compression(catalog, "bert@1.0.0", "onnx-export", {}, version="1.1.0")
    with pytest.raises(NotFound, match=r"model 'bert' has no version 9.9.9"):
        queue_compression(catalog, "bert@9.9.9", "onnx-export", {})
    assert jobs_count(catalog) == 0


def test_the_job_rechecks_a_parent_that_no_recipe_can_take(catalog, tiny_bert):
    """A job row written by hand (or queued before the catalog changed) fails with the same
    clear message in the worker's function, and stores nothing."""
    from relman.compress import job
    from relman.jobs.context import JobContext

    parent = import_model(catalog, tiny_bert, "bert")
    ctx = JobContext(catalog)
    with pytest.raises(RecipeError, match="its task is 'text-classification'"):
        job.run({"recipe": "int4-weight-only", "parent_version_ids": [parent.id]}, ctx)
    ctx.cleanup()
    assert len(catalog.versions()) == 1


# -- CLI --------------------------------------------------------------------------------------

def test_cli_recipes_lists_parameters_types_and_defaults(run_cli):
    res = run_cli("recipes", "--json")
    assert res.exit_code == 0
    by_name = {r["name"]: r for r in json.loads(res.output)}
    assert {"torch-int8-dynamic", "onnx-export", "ort-int8", "half", "onnx-fp16", "int4-weight-only"} <= set(by_name)
    mode = next(p for p in by_name["ort-int8"]["params"] if p["name"] == "mode")
    assert mode == {"name": "mode", "type": "str", "default": "dynamic", "help": mode["help"],
                    "choices": ["dynamic", "static"], "min": None, "max": None, "shown_when": None} and mode["help"]
    calibrate = next(p for p in by_name["ort-int8"]["params"] if p["name"] == "calibrate_method")
    assert calibrate["shown_when"] == {"mode": ["static"]}  # applies to static quantisation only
    assert by_name["int4-weight-only"]["tasks"] == ["causal-lm"]
    text = run_cli("recipes").output
    assert "ort-int8: INT8 with onnxruntime" in text and "--param per_channel=False" in text


def test_cli_compress_waits_and_reports_the_child(run_cli, catalog, tiny_bert):
    import_model(catalog, tiny_bert, "bert")
    res = run_cli("compress", "bert@1.0.0", "half", "--param", "dtype=bfloat16", "--no-evaluate", "--device", "cpu",
                  "--wait")
    assert res.exit_code == 0, res.output
    assert "stored bert@1.0.1: hf" in res.output
    child = catalog.resolve("bert@1.0.1")
    assert child.dtype == "bfloat16" and child.recipe["params"] == {"dtype": "bfloat16"}


def test_cli_compress_refuses_bad_input_with_one_line(run_cli, catalog, tiny_bert):
    import_model(catalog, tiny_bert, "bert")
    res = run_cli("compress", "bert@1.0.0", "ort-int8", "--param", "per_channel")
    assert res.exit_code == 1 and res.output.strip() == "error: --param expects KEY=VALUE, got 'per_channel'"
    res = run_cli("compress", "bert@1.0.0", "int4-weight-only")
    assert res.exit_code == 1 and "the recipe is for causal-lm" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert jobs_count(catalog) == 0


def test_cli_compress_that_fails_in_the_worker_says_why_and_stores_nothing(run_cli, catalog, tiny_bert):
    import_model(catalog, tiny_bert, "bert")
    shas = set(catalog.store.all_shas())
    res = run_cli("compress", "bert@1.0.0", "onnx-export", "--param", "tolerance=1e-12", "--device", "cpu", "--wait")
    assert res.exit_code == 1
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("error: job 1 (compress) failed: ONNX export of ") and "over the tolerance 1e-12" in last
    assert "stored bert@" not in res.output
    assert len(catalog.versions()) == 1 and set(catalog.store.all_shas()) == shas
