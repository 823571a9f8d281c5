"""Model cards the Hub can read: every card of a lineage with an adapter, a merge of adapters,
a merged adapter, a quantised and a fine-tuned version parses with huggingface_hub's ModelCard
(offline) and carries `base_model` / `base_model_relation` and its evaluation results; an
adapter exports as a PEFT folder that PEFT loads onto the exported base."""

from __future__ import annotations

import json

import pytest
import torch

from relman.app.models import import_model
from relman.catalog import Metric, open_catalog
from relman.modelio import tiny
from relman.release.bundle import export_folder
from relman.release.modelcard import render_card

from adapter_support import planted, run_finetune, run_recipe_commit

QUICK_LORA = {"method": "lora", "r": 2, "alpha": 4, "target_modules": "query,value", "epochs": 1, "lr": 1e-2,
              "batch_size": 16}


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("cards")
    cat = open_catalog(root / "catalog")
    base = import_model(cat, tiny.tiny_bert_classifier(root / "bert"), "bert")
    _, ad1 = run_finetune(cat, base, QUICK_LORA, planted(60, seed=1), root / "a")
    _, ad2 = run_finetune(cat, base, {**QUICK_LORA, "dp": True, "delta": 1e-3}, planted(60, seed=2), root / "b")
    _, ad3 = run_finetune(cat, base, QUICK_LORA, planted(60, seed=4), root / "c")
    _, fed = run_recipe_commit(cat, "merge-fedavg", [ad1, ad3], {}, root / "f")
    _, merged = run_recipe_commit(cat, "merge-adapter", [ad1], {}, root / "m")
    _, int8 = run_recipe_commit(cat, "torch-int8-dynamic", [merged], {}, root / "q")
    _, full = run_finetune(cat, base, {"epochs": 1}, planted(40, seed=3), root / "full")
    for v in (ad1, merged):
        cat.add_metrics(v.id, [Metric("quality", "accuracy", 0.9, {"dataset": "planted"})])
    yield cat, {"base": base, "adapter": ad1, "dp_adapter": ad2, "fedavg": fed, "merged": merged, "int8": int8,
                "full": full}, root
    cat.close()


def test_every_card_parses_with_the_hub_library_and_names_its_base(family):
    from huggingface_hub import ModelCard

    cat, v, _ = family
    expected = {"base": (None, None), "adapter": ("bert@1.0.0", "adapter"), "dp_adapter": ("bert@1.0.0", "adapter"),
                "fedavg": ([v["adapter"].ref, "bert@1.0.3"], "merge"), "merged": ([v["adapter"].ref, "bert@1.0.0"], "merge"),
                "int8": (v["merged"].ref, "quantized"), "full": ("bert@1.0.0", "finetune")}
    for key, version in v.items():
        card = ModelCard(render_card(cat, cat.get_version(version.id)))
        data = card.data.to_dict()
        assert (data.get("base_model"), data.get("base_model_relation")) == expected[key], key
    adapter_card = ModelCard(render_card(cat, v["adapter"]))
    assert adapter_card.data.library_name == "peft"
    results = adapter_card.data.eval_results
    assert [(r.dataset_name, r.metric_type, r.metric_value) for r in results if r.metric_type == "accuracy"] == \
        [("planted", "accuracy", 0.9)]
    assert "pinned to that base's manifest sha256" in adapter_card.text
    dp_card = ModelCard(render_card(cat, v["dp_adapter"]))
    assert "## Privacy" in dp_card.text and "noise_multiplier" in dp_card.text
    assert any(r.metric_type == "privacy_epsilon" for r in dp_card.data.eval_results or [])


def test_an_adapter_exports_as_a_peft_folder_naming_its_base(family, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    cat, v, _ = family
    base_dir = export_folder(cat, v["base"].id, tmp_path / "base", "hf")
    out = export_folder(cat, v["adapter"].id, tmp_path / "adapter", "hf")
    assert {p.name for p in out.iterdir()} == {"adapter_config.json", "adapter_model.safetensors",
                                               "relman_adapter.json", "README.md"}
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "bert@1.0.0"
    assert config["revision"] == v["base"].manifest_sha256
    base = AutoModelForSequenceClassification.from_pretrained(base_dir, local_files_only=True)
    model = PeftModel.from_pretrained(base, out).eval()
    merged = AutoModelForSequenceClassification.from_pretrained(export_folder(cat, v["merged"].id, tmp_path / "m",
                                                                              "hf"), local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(base_dir)
    x = tok(["a great film", "the awful plot"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert (model(**x).logits - merged(**x).logits).abs().max().item() <= 1e-4


def _derived(cat, parents, recipe: str, fmt: str = "hf"):
    """A child version recorded as made by `recipe` (the card reads only the record, so the
    files are the first parent's; each recipe's own run is tested in its own test file)."""
    files = {a["path"]: cat.store.path(a["sha256"]) for a in cat.artifacts(parents[0].id)}
    return cat.add_version(parents[0].model, files, format=fmt, task=parents[0].task,
                           parents=[(p.id, None) for p in parents], relation="derived",
                           recipe={"name": recipe, "params": {}})


def test_every_recipe_states_its_base_model_relation(catalog, tiny_bert):
    """Every registered recipe has an explicit Hub relation; a two-parent distillation is a
    fine-tune (the Hub would guess a merge from two base models), a conversion is filed as
    quantized, and a recipe this install does not know makes no claim."""
    from huggingface_hub import ModelCard

    from relman.app.models import import_model
    from relman.compress.registry import all_recipes
    from relman.release.modelcard import hub_relations

    names = {r.name for r in all_recipes()}
    assert names and names <= set(hub_relations()), f"recipes without a Hub relation: {sorted(names - set(hub_relations()))}"
    assert set(hub_relations().values()) <= {"quantized", "adapter", "merge", "finetune"}  # the Hub's four words
    base = import_model(catalog, tiny_bert, "bert")
    teacher = _derived(catalog, [base], "finetune")
    expected = {"ort-int8": "quantized", "onnx-export": "quantized", "prune-magnitude": "finetune",
                "finetune": "finetune", "merge-fedavg": "merge", "half": "quantized"}
    for recipe, relation in expected.items():
        v = _derived(catalog, [base], recipe)
        data = ModelCard(render_card(catalog, v)).data.to_dict()
        assert (data["base_model"], data["base_model_relation"]) == (base.ref, relation), recipe
    distilled = _derived(catalog, [base, teacher], "distill")
    data = ModelCard(render_card(catalog, distilled)).data.to_dict()
    assert data["base_model"] == [base.ref, teacher.ref] and data["base_model_relation"] == "finetune"
    unknown = _derived(catalog, [base], "someone-elses-recipe")
    data = ModelCard(render_card(catalog, unknown)).data.to_dict()
    assert data["base_model"] == base.ref and "base_model_relation" not in data


def test_model_index_results_carry_interval_dataset_and_split(catalog, tiny_bert):
    """A metric with an interval reads "0.912 ± 0.011" in model-index (the schema's one value),
    with relman's exact bounds beside it; results are grouped per dataset and split, the split
    and the dataset's sha256 named; a metric without an interval stays a plain number."""
    from huggingface_hub import ModelCard

    from relman.app.models import import_model

    v = import_model(catalog, tiny_bert, "bert")
    catalog.add_metrics(v.id, [
        Metric("quality", "accuracy", 0.912, {"dataset": "sst", "split": "test", "interval": [0.9, 0.922],
                                              "interval_level": 0.95, "n": 872, "dataset_sha": "ab" * 32}),
        Metric("quality", "macro_f1", 0.8, {"dataset": "sst", "split": "validation", "interval": [0.71, 0.86]}),
        Metric("explain", "explain_sufficiency", 0.25, {"dataset": "sst", "split": "test", "ci95": [0.2, 0.3]}),
        Metric("quality", "loss", 0.3, {"dataset": "sst", "split": "test"}),
    ])
    card = ModelCard(render_card(catalog, v))
    got = {(r.dataset_name, r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert got == {("sst", "test", "accuracy"): "0.912 ± 0.011", ("sst", "validation", "macro_f1"): "0.800 ± 0.075",
                   ("sst", "test", "explain_sufficiency"): "0.250 ± 0.050", ("sst", "test", "loss"): 0.3}
    assert {r.dataset_revision for r in card.data.eval_results if r.dataset_split == "test"} == {"ab" * 32}
    import yaml

    index = yaml.safe_load(render_card(catalog, v).split("---")[1])["model-index"][0]["results"]  # relman's fields too
    test = next(r for r in index if r["dataset"]["split"] == "test")
    acc = next(m for m in test["metrics"] if m["type"] == "accuracy")
    assert acc["relman"]["value"] == 0.912 and acc["relman"]["interval"] == [0.9, 0.922]
    assert acc["relman"]["interval_level"] == 0.95 and acc["relman"]["n"] == 872
    loss = next(m for m in test["metrics"] if m["type"] == "loss")
    assert "interval" not in loss["relman"]
    assert "| accuracy | 0.912 ± 0.011 (95%: 0.9 to 0.922) | sst |" in card.text  # the metrics table says it too
