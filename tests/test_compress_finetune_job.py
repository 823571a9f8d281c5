"""End to end through the "compress" job (real queue, runner and worker processes): a fine-tune
on a registered dataset, its live loss curve in job_points, then a FedAvg merge of the parent
and the fine-tuned child with the weights on the lineage edges."""

from __future__ import annotations

from safetensors.torch import load_file

from relman.app.compress import queue_compression
from relman.app.models import import_model
from relman.jobs import queue
from relman.jobs.queue import get_job
from relman.jobs.testing import drive_until


def finished(catalog, job_id: int):
    return lambda: get_job(catalog, job_id)["status"] in queue.FINISHED


def test_finetune_then_merge_through_the_compress_job(catalog, make_runner, tiny_bert, tmp_path):
    from relman.app.datasets import register_demo_sentiment

    register_demo_sentiment(catalog, "sentiment", n=64, val_fraction=0.25)
    parent = import_model(catalog, tiny_bert, "bert")
    r = make_runner(cpu_slots=1)
    job_id = queue_compression(catalog, "bert@1.0.0", "finetune",
                               {"dataset": "sentiment", "epochs": "2", "lr": "2e-3", "batch_size": "8"},
                               device="cpu", evaluate=False)
    drive_until(r, finished(catalog, job_id), 180, "the fine-tune job")
    job = get_job(catalog, job_id)
    assert job["status"] == "succeeded", job["error"]
    child = catalog.get_version(job["result_version_id"])
    assert child.ref == "bert@1.0.1" and child.format == "hf" and child.task == "text-classification"
    assert child.recipe["name"] == "finetune" and child.recipe["params"]["dataset"] == "sentiment"
    assert child.meta["train_samples"] == 48 and child.meta["new_head"] is False
    values = catalog.metric_values(child.id)
    assert values["train_samples"] == 48 and 0.0 <= values["val_accuracy"] <= 1.0
    curve = catalog.query("SELECT step, value FROM job_points WHERE job_id = ? AND series = 'train_loss'"
                          " ORDER BY step", [job_id])
    assert [row["step"] for row in curve] == [float(i) for i in range(1, 2 * 6 + 1)]  # 2 epochs x 6 batches

    merge_id = queue_compression(catalog, ["bert@1.0.0", "bert@1.0.1"], "merge-fedavg", {"weights": "16,48"},
                                 device="cpu", evaluate=False)
    drive_until(r, finished(catalog, merge_id), 120, "the merge job")
    merge = get_job(catalog, merge_id)
    assert merge["status"] == "succeeded", merge["error"]
    merged = catalog.get_version(merge["result_version_id"])
    edges = catalog.parents(merged.id)
    assert [(e["parent_id"], e["weight"], e["relation"]) for e in edges] == [
        (parent.id, 0.25, "merge-fedavg"), (child.id, 0.75, "merge-fedavg")]
    a = load_file(str(catalog.materialize(parent.id, tmp_path / "a") / "model.safetensors"))
    b = load_file(str(catalog.materialize(child.id, tmp_path / "b") / "model.safetensors"))
    m = load_file(str(catalog.materialize(merged.id, tmp_path / "m") / "model.safetensors"))
    w = "bert.encoder.layer.0.attention.self.query.weight"
    assert (m[w] - (0.25 * a[w] + 0.75 * b[w])).abs().max() < 1e-6
    assert catalog.orphan_blobs() == [] and catalog.verify_audit() == []
