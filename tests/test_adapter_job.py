"""End to end through real workers: a LoRA fine-tune job makes a `peft-adapter` version whose
automatic evaluation (quality, fidelity vs its base, size, latency) runs in another worker on
base + adapter; `relman show` names the base; an export writes the PEFT folder."""

from __future__ import annotations

import json

from relman.app.compress import queue_compression
from relman.app.models import import_model
from relman.jobs import queue
from relman.jobs.queue import get_job
from relman.jobs.testing import drive_until


def test_lora_job_then_its_evaluation_run_in_workers(catalog, make_runner, tiny_bert, run_cli, tmp_path):
    from relman.app.datasets import register_demo_sentiment

    register_demo_sentiment(catalog, "sentiment", n=80, val_fraction=0.2, test_fraction=0.2)
    base = import_model(catalog, tiny_bert, "bert")
    r = make_runner(cpu_slots=1)
    job_id = queue_compression(catalog, "bert@1.0.0", "finetune",
                               {"method": "lora", "r": "2", "target_modules": "query,value", "epochs": "1",
                                "lr": "1e-2", "batch_size": "8"}, device="cpu", dataset="sentiment")

    def all_done() -> bool:
        jobs = catalog.query("SELECT status FROM jobs")
        return len(jobs) == 2 and all(j["status"] in queue.FINISHED for j in jobs)

    drive_until(r, all_done, 300, "the LoRA job and its evaluation")
    job = get_job(catalog, job_id)
    assert job["status"] == "succeeded", job["error"]
    child = catalog.get_version(job["result_version_id"])
    assert child.format == "peft-adapter" and child.size_bytes < base.size_bytes / 4
    evaluation = catalog.query("SELECT status, error FROM jobs WHERE id != ?", [job_id])[0]
    assert evaluation["status"] == "succeeded", evaluation["error"]
    values = catalog.metric_values(child.id)
    assert {"accuracy", "agreement", "size_bytes"} <= set(values)
    assert values["size_bytes"] == child.size_bytes  # the adapter's own bytes, not its base's
    shown = run_cli("show", child.ref).output
    assert "adapter of   bert@1.0.0" in shown
    out = tmp_path / "export"
    assert run_cli("export", "--format", "hf", child.ref, str(out)).exit_code == 0
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "bert@1.0.0"
