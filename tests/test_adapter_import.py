"""`relman import` of a PEFT adapter folder (issue 26, item 15): recognised as `peft-adapter`,
its config, weights and pin checked, its base found in the catalog by the pinned manifest;
whatever does not check is refused in one line and nothing is stored. A genuine adapter
exported with `--format hf` imports back as the same version (same manifest)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from test_hostile_inputs import refused

HIDDEN, R = 32, 2
LAYERS = ("bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0.attention.self.value")


def base_version(catalog, tmp_path: Path, model: str = "bert", hidden: int = HIDDEN):
    from safetensors.numpy import save_file

    folder = tmp_path / f"base-{model}"
    folder.mkdir()
    rng = np.random.default_rng(0)
    save_file({f"{m}.weight": rng.random((hidden, hidden), dtype=np.float32) for m in LAYERS}
              | {"classifier.weight": rng.random((2, hidden), dtype=np.float32)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": [
        "BertForSequenceClassification"], "id2label": {"0": "neg", "1": "pos"}}))
    return catalog.add_version(model, {"model.safetensors": folder / "model.safetensors",
                                       "config.json": folder / "config.json"}, format="hf",
                               task="text-classification", architecture="BertForSequenceClassification",
                               meta={"labels": ["neg", "pos"], "model_type": "bert"})


def adapter_folder(tmp_path: Path, base, *, name: str = "adapter", config: dict | None = None,
                   pin: dict | None = None, rank: int = R, hidden: int = HIDDEN, layers=LAYERS,
                   files: tuple[str, ...] = ("adapter_config.json", "adapter_model.safetensors",
                                             "relman_adapter.json")) -> Path:
    """An adapter folder laid out as relman's LoRA fine-tune writes it, with edits."""
    from safetensors.numpy import save_file

    folder = tmp_path / name
    folder.mkdir()
    rng = np.random.default_rng(1)
    tensors = {}
    for m in layers:
        tensors[f"base_model.model.{m}.lora_A.weight"] = rng.random((rank, hidden), dtype=np.float32)
        tensors[f"base_model.model.{m}.lora_B.weight"] = rng.random((hidden, rank), dtype=np.float32)
    cfg = {"peft_type": "LORA", "r": R, "lora_alpha": 4, "lora_dropout": 0.0, "bias": "none",
           "target_modules": ["query", "value"], "modules_to_save": None, "task_type": None,
           "base_model_name_or_path": base.ref, "revision": base.manifest_sha256, "megatron_config": None,
           "megatron_core": "megatron.core",
           "auto_mapping": {"base_model_class": "BertForSequenceClassification",
                            "parent_library": "transformers.models.bert.modeling_bert"}}
    cfg.update(config or {})
    the_pin = {"base_version_id": base.id, "base_ref": base.ref, "base_manifest_sha256": base.manifest_sha256,
               "base_format": "hf", "base_task": "text-classification", "task": "text-classification",
               "config_overrides": {}, "r": R, "lora_alpha": 4, "target_modules": ["query", "value"],
               "modules_to_save": []}
    the_pin.update(pin or {})
    if "adapter_model.safetensors" in files:
        save_file(tensors, str(folder / "adapter_model.safetensors"))
    if "adapter_config.json" in files:
        (folder / "adapter_config.json").write_text(json.dumps(cfg))
    if "relman_adapter.json" in files:
        (folder / "relman_adapter.json").write_text(json.dumps(the_pin))
    (folder / "README.md").write_text("# an adapter\n")
    return folder


def test_an_adapter_folder_imports_as_an_adapter_of_its_pinned_base(catalog, tmp_path, run_cli):
    from relman.app.models import import_model

    base = base_version(catalog, tmp_path)
    v = import_model(catalog, adapter_folder(tmp_path, base), "bert-lora")
    assert v.format == "peft-adapter" and v.task == "text-classification"
    assert sorted(a["path"] for a in catalog.artifacts(v.id)) == ["adapter_config.json", "adapter_model.safetensors",
                                                                  "relman_adapter.json"]
    assert [p["parent_id"] for p in catalog.parents(v.id)] == [base.id]
    assert v.meta["adapter"]["base_manifest_sha256"] == base.manifest_sha256 and v.meta["left_out"] == ["README.md"]
    assert v.params == 2 * 2 * R * HIDDEN
    r = run_cli("show", v.ref)
    assert "adapter of   bert@1.0.0" in r.output, r.output
    r = run_cli("verify")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("config,message", [
    ({"peft_type": "IA3"}, "only LoRA adapters are supported"),
    ({"r": 10**30}, "'r' must be a whole number from 1 to 65,536"),
    ({"r": -1}, "'r' must be a whole number from 1 to 65,536"),
    ({"r": True}, "'r' must be a whole number"),
    ({"r": 4}, "has rank 2, adapter_config.json says r=4"),
    ({"lora_alpha": float("nan")}, "'lora_alpha' must be a finite number"),
    ({"auto_mapping": {"base_model_class": "system", "parent_library": "os"}}, "'auto_mapping' must name a"),
    ({"auto_mapping": {"base_model_class": "X", "parent_library": "transformers.x; import os"}}, "'auto_mapping'"),
    ({"target_modules": "(a+)+$"}, "'target_modules' must list module names"),
    ({"target_modules": ["query", 5]}, "'target_modules' must list module names"),
    ({"megatron_config": {"x": 1}, "megatron_core": "evil"}, "would make PEFT import another module"),
    ({"revision": "f" * 64}, "names base revision ffffffffffffffff"),
    ({"lora_alpha": 8}, "the pin says lora_alpha=4, adapter_config.json 8"),
])
def test_a_bad_adapter_config_is_refused(catalog, tmp_path, run_cli, config, message):
    from relman.app.models import import_model

    base = base_version(catalog, tmp_path)
    folder = adapter_folder(tmp_path, base, config=config)
    refused(catalog, lambda: import_model(catalog, folder, "bert-lora"), message)
    r = run_cli("verify")
    assert r.exit_code == 0, r.output


def test_a_forged_pin_is_refused(catalog, tmp_path, run_cli):
    from relman.app.models import import_model

    base = base_version(catalog, tmp_path)
    other = base_version(catalog, tmp_path, "wide", hidden=HIDDEN * 2)  # in the catalog, another model
    for name, pin, message in (
            ("nowhere", {"base_manifest_sha256": "0" * 64}, "is not in this catalog"),
            ("by-id", {"base_manifest_sha256": "1" * 64, "base_version_id": base.id}, "is not in this catalog"),
            ("short", {"base_manifest_sha256": "abc"}, "64 lowercase hex digits"),
            ("other", {"base_manifest_sha256": other.manifest_sha256, "base_version_id": other.id},
             "do not fit the pinned base's layer"),
            ("format", {"base_format": "onnx"}, "is format 'onnx', the catalog says 'hf'"),
            ("task", {"task": "causal-lm", "base_task": "causal-lm"}, "is task 'causal-lm'"),
            ("adapter", {"base_format": "peft-adapter"}, "adapters of adapters are not supported"),
            ("labels", {"config_overrides": {"id2label": {"x": 1}}}, "malformed label set"),
            ("code", {"config_overrides": {"auto_map": "x"}}, "'config_overrides' may only set"),
            ("rank", {"r": 8}, "the pin says r=8")):
        config = {"revision": None} if name in ("nowhere", "by-id", "short", "other") else {}
        folder = adapter_folder(tmp_path, base, name=name, pin=pin, config=config)
        refused(catalog, lambda: import_model(catalog, folder, "bert-lora"), message)
    folder = adapter_folder(tmp_path, base, name="missing-layer", layers=("bert.pooler.dense",))
    refused(catalog, lambda: import_model(catalog, folder, "bert-lora"), "a layer its pinned base does not have")
    r = run_cli("verify")
    assert r.exit_code == 0, r.output


def test_a_bundle_of_an_adapter_with_a_bad_config_is_refused(catalog, tmp_path, monkeypatch):
    """The same config check on the bundle path: a trusted signer's bundle holding an IA3 config."""
    from relman.catalog import open_catalog
    from relman.release import bundle, keys

    monkeypatch.setenv("RELMAN_KEYS_DIR", str(tmp_path / "keys"))
    keys.create_key("lab")
    base = base_version(catalog, tmp_path)
    folder = adapter_folder(tmp_path, base, config={"peft_type": "IA3"})
    v = catalog.add_version("bert-ia3", {n: folder / n for n in ("adapter_config.json", "adapter_model.safetensors",
                                                                 "relman_adapter.json")}, format="peft-adapter",
                            task="text-classification")  # put there without `import`
    out = bundle.export_bundle(catalog, v.id, tmp_path / "b.relman", key_name="lab")["path"]
    target = open_catalog(tmp_path / "target")
    try:
        refused(target, lambda: bundle.import_bundle(target, out), "only LoRA adapters are supported")
    finally:
        target.close()


def test_an_adapter_of_a_deleted_or_archived_base_is_refused(catalog, tmp_path, run_cli):
    from relman.app.housekeeping import archive_version, delete_version, restore_version
    from relman.app.models import import_model

    base = base_version(catalog, tmp_path)
    folder = adapter_folder(tmp_path, base)
    archive_version(catalog, base.ref, tmp_path / "archive")
    refused(catalog, lambda: import_model(catalog, folder, "bert-lora"), "is archived in")
    restore_version(catalog, base.ref)
    delete_version(catalog, base.ref, why="test")
    refused(catalog, lambda: import_model(catalog, folder, "bert-lora"), "was deleted from this catalog")
    r = run_cli("verify")
    assert r.exit_code == 0, r.output


def test_adapter_folders_that_are_not_whole_are_refused(catalog, tmp_path, run_cli):
    base = base_version(catalog, tmp_path)
    plain = adapter_folder(tmp_path, base, name="plain", files=("adapter_config.json", "adapter_model.safetensors"))
    from test_hostile_inputs import cli_refused

    cli_refused(run_cli, catalog, ["import", str(plain), "--model", "x"], "without relman_adapter.json, the pin")
    no_weights = adapter_folder(tmp_path, base, name="no-weights", files=("adapter_config.json", "relman_adapter.json"))
    cli_refused(run_cli, catalog, ["import", str(no_weights), "--model", "x"], "without adapter_model.safetensors")
    both = adapter_folder(tmp_path, base, name="both")
    (both / "config.json").write_text("{}")
    cli_refused(run_cli, catalog, ["import", str(both), "--model", "x"], "holds both config.json and")
    pin_only = tmp_path / "pin-only"
    pin_only.mkdir()
    (pin_only / "w.safetensors").write_bytes((adapter_folder(tmp_path, base, name="src") /
                                              "adapter_model.safetensors").read_bytes())
    (pin_only / "relman_adapter.json").write_text("{}")
    cli_refused(run_cli, catalog, ["import", str(pin_only), "--model", "x"], "without adapter_config.json")
    cli_refused(run_cli, catalog, ["import", str(adapter_folder(tmp_path, base, name="t")), "--model", "x", "--task",
                                   "causal-lm"], "makes a text-classification model (its pin says so), not causal-lm")
    r = run_cli("verify")
    assert r.exit_code == 0, r.output


@pytest.mark.heavy
@pytest.mark.parametrize("base_fixture", ["tiny_bert", "tiny_bert_encoder"])
def test_a_genuine_lora_adapter_exported_as_hf_imports_back_as_itself(catalog, base_fixture, request, tmp_path,
                                                                      run_cli):
    """A real LoRA fine-tune (PEFT's own files), exported with --format hf, then imported: the
    same three files (same manifest), pinned to the same base, and it loads. The encoder base
    becomes a classifier (a new head in the adapter, layer names with a prefix the base lacks)."""
    from adapter_support import planted, run_finetune
    from relman.app.models import import_model
    from relman.modelio.loading import load_torch_model, materialize_version

    base = import_model(catalog, request.getfixturevalue(base_fixture), "bert")
    _, child = run_finetune(catalog, base, {"method": "lora", "r": "2", "target_modules": "query,value",
                                            "epochs": "1"}, planted(64), tmp_path / "work")
    assert child.format == "peft-adapter"
    r = run_cli("export", child.ref, str(tmp_path / "out"), "--format", "hf")
    assert r.exit_code == 0, r.output
    v = import_model(catalog, tmp_path / "out", "bert-lora-again")
    assert v.format == "peft-adapter" and v.manifest_sha256 == child.manifest_sha256
    assert [p["parent_id"] for p in catalog.parents(v.id)] == [base.id]
    assert v.meta["left_out"] == ["README.md"]
    model = load_torch_model(materialize_version(catalog, v.id, tmp_path / "load"), v.task, fmt=v.format)
    assert sum(1 for n, _ in model.named_modules() if n.endswith("lora_A")) > 0
    r = run_cli("verify")
    assert r.exit_code == 0, r.output
