"""Differentially private fine-tuning (Opacus) and federated merges of adapters: ε recorded
within its target, a smaller target buys more noise, `privacy_epsilon` gates pass or fail (and
fail as "not evaluated" without DP), FedAvg of DP adapters records the composed ε, mixing DP
and non-DP parents is refused unless asked, a BatchNorm model is refused naming the layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from relman.app.models import import_model
from relman.catalog import open_catalog
from relman.compress.adapt.merge import average_update
from relman.errors import RecipeError
from relman.modelio import tiny
from relman.release.gates import evaluate_gates
from relman.release.policy import default_policy

from adapter_support import planted, run_finetune, run_recipe_commit

DP_LORA = {"method": "lora", "r": 2, "alpha": 4, "target_modules": "query,value", "epochs": 2, "lr": 1e-2,
           "batch_size": 16, "dp": True, "delta": 1e-4, "max_grad_norm": 1.0}


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    """Two sites' DP LoRA adapters of one base (different data, different budgets) and one
    non-DP adapter."""
    root = tmp_path_factory.mktemp("dp")
    cat = open_catalog(root / "catalog")
    base = import_model(cat, tiny.tiny_bert_classifier(root / "bert"), "bert")
    _, loose = run_finetune(cat, base, {**DP_LORA, "target_epsilon": 8.0}, planted(120, seed=1), root / "a")
    _, tight = run_finetune(cat, base, {**DP_LORA, "target_epsilon": 1.0}, planted(120, seed=2), root / "b")
    _, plain = run_finetune(cat, base, {**DP_LORA, "dp": False, "epochs": 1}, planted(120, seed=3), root / "c")
    yield cat, base, loose, tight, plain, root
    cat.close()


def test_dp_records_a_ledger_within_its_target(sites):
    cat, base, loose, tight, plain, _ = sites
    for child, target in ((loose, 8.0), (tight, 1.0)):
        ledger = child.meta["privacy"]
        assert 0 < ledger["epsilon"] <= target
        assert ledger["delta"] == 1e-4 and ledger["max_grad_norm"] == 1.0 and ledger["accountant"] == "rdp"
        assert ledger["steps"] == 2 * round(1 / ledger["sample_rate"]) and ledger["mechanism"].startswith("DP-SGD")
        assert cat.metric_values(child.id)["privacy_epsilon"] == pytest.approx(ledger["epsilon"])
    assert tight.meta["privacy"]["noise_multiplier"] > loose.meta["privacy"]["noise_multiplier"]
    assert "privacy" not in plain.meta and "privacy_epsilon" not in cat.metric_values(plain.id)


def test_privacy_gate_passes_fails_and_is_not_evaluated_without_dp(sites):
    cat, base, loose, tight, plain, _ = sites
    policy = default_policy()
    policy["gates"]["candidate"] = ["privacy_epsilon <= 4"]
    status = {}
    for v in (loose, tight, plain):
        rule = evaluate_gates(cat, v, "candidate", policy=policy, revision=1).rules[0]
        status[v.id] = (rule.status, rule.reason)
    assert status[tight.id][0] == "pass"
    assert status[loose.id][0] == "fail"
    assert status[plain.id][0] == "fail" and "not evaluated" in status[plain.id][1]


def test_fedavg_of_dp_adapters_composes_privacy_and_refuses_mixing(sites):
    cat, base, loose, tight, plain, root = sites
    out, merged = run_recipe_commit(cat, "merge-fedavg", [loose, tight], {}, root / "m")
    assert merged.format == "peft-adapter" and merged.meta["adapter"]["base_manifest_sha256"] == base.manifest_sha256
    ledger = merged.meta["privacy"]
    assert ledger["epsilon"] == max(loose.meta["privacy"]["epsilon"], tight.meta["privacy"]["epsilon"])
    assert ledger["delta"] == 1e-4 and "disjoint" in ledger["assumption"]
    assert cat.metric_values(merged.id)["privacy_epsilon"] == ledger["epsilon"]
    with pytest.raises(RecipeError, match=r"trained without DP.*allow_mixed_privacy=true"):
        run_recipe_commit(cat, "merge-fedavg", [loose, plain], {}, root / "mixed")
    out, mixed = run_recipe_commit(cat, "merge-fedavg", [loose, plain], {"allow_mixed_privacy": True}, root / "mixed2")
    assert mixed.meta["privacy"]["epsilon"] is None and "privacy_epsilon" not in cat.metric_values(mixed.id)


def test_adapter_fedavg_refactorises_the_mean_update(sites):
    """ΔW = B A averaged then re-factorised: exact at rank 2r, the best rank-r fit at r; averaging
    A and B separately is measurably further from the mean update."""
    cat, base, loose, tight, plain, root = sites
    a1, a2 = (load_file(str(cat.store.path(next(a["sha256"] for a in cat.artifacts(v.id)
                                                     if a["path"] == "adapter_model.safetensors"))))
              for v in (loose, tight))
    name = next(k for k in a1 if ".lora_A." in k)
    b_name = name.replace(".lora_A.", ".lora_B.")
    mean = 0.5 * (a1[b_name].double() @ a1[name].double()) + 0.5 * (a2[b_name].double() @ a2[name].double())
    A, B, residual, factor_error = average_update([a1[name], a2[name]], [a1[b_name], a2[b_name]], [0.5, 0.5], 4)
    assert residual < 1e-6 and torch.allclose((B.double() @ A.double()), mean, atol=1e-6)
    A, B, residual, factor_error = average_update([a1[name], a2[name]], [a1[b_name], a2[b_name]], [0.5, 0.5], 2)
    assert A.shape == a1[name].shape and B.shape == a1[b_name].shape
    assert residual < factor_error, (residual, factor_error)
    out, merged = run_recipe_commit(cat, "merge-fedavg", [loose, tight], {"adapter_rank": 4}, root / "m4")
    metrics = {m.name: m.value for m in out.metrics}
    assert metrics["fedavg_svd_residual"] < 1e-6 < metrics["fedavg_factor_average_error"]


def test_dp_refuses_a_layer_opacus_cannot_handle(catalog, tmp_path):
    from transformers import ResNetConfig, ResNetForImageClassification

    from relman.data import demo
    from relman.data.dataset import Dataset

    folder = tmp_path / "resnet"
    cfg = ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=[8, 8], depths=[1, 1], num_labels=2,
                       id2label={0: "zero", 1: "one"}, label2id={"zero": 0, "one": 1})
    ResNetForImageClassification(cfg).save_pretrained(folder)
    tiny.write_image_processor(folder, image_size=8, channels=1)
    resnet = import_model(catalog, folder, "resnet", task="image-classification")
    digits = demo.digits(200)
    keep = np.flatnonzero(digits.labels < 2)
    data = Dataset(name="zero-one", kind="image", images=digits.images[keep], labels=digits.labels[keep],
                   label_names=["zero", "one"])
    with pytest.raises(RecipeError, match=r"layer 'resnet\.embedder\.embedder\.normalization' \(BatchNorm2d\)"):
        run_finetune(catalog, resnet, {"dp": True, "delta": 1e-3, "epochs": 1}, data, tmp_path / "w")


def test_full_dp_fine_tuning_freezes_broadcast_embeddings(catalog, tiny_bert, tmp_path):
    base = import_model(catalog, tiny_bert, "bert")
    out, child = run_finetune(catalog, base, {"dp": True, "delta": 1e-3, "epochs": 1, "lr": 1e-3}, planted(60),
                              tmp_path)
    ledger = child.meta["privacy"]
    assert child.format == "hf" and 0 < ledger["epsilon"] <= 8.0
    assert ledger["frozen_for_dp"] == ["bert.embeddings.position_embeddings", "bert.embeddings.token_type_embeddings"]


def test_post_processing_keeps_the_guarantee_training_on_data_does_not(sites):
    cat, base, loose, tight, plain, root = sites
    _, merged = run_recipe_commit(cat, "merge-adapter", [tight], {}, root / "pp1")
    _, int8 = run_recipe_commit(cat, "torch-int8-dynamic", [merged], {}, root / "pp2")
    for v in (merged, int8):
        assert cat.metric_values(v.id)["privacy_epsilon"] == tight.meta["privacy"]["epsilon"]
    assert int8.meta["privacy"]["inherited_from"] == merged.ref
    _, retrained = run_finetune(cat, merged, {"epochs": 1}, planted(40, seed=5), root / "pp3")
    assert "privacy_epsilon" not in cat.metric_values(retrained.id)  # new data, no DP: no guarantee
