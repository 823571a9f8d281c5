"""GUI: the lineage view draws a LoRA adapter's edge to its base distinctly (dashed), the
versions table's details name an adapter's base and a DP version's privacy ledger, and the
compress dialog's finetune form offers full / LoRA and the DP settings."""

from __future__ import annotations

from relman.compress.registry import get_recipe


def _adapter_family(catalog, tmp_path):
    (tmp_path / "w").mkdir()
    weights = tmp_path / "w" / "adapter_model.safetensors"
    weights.write_bytes(b"x" * 64)
    base = catalog.add_version("bert", {"model.safetensors": weights}, format="hf", task="text-classification")
    ledger = {"epsilon": 2.5, "delta": 1e-5, "accountant": "rdp", "noise_multiplier": 1.1, "sample_rate": 0.05,
              "steps": 40, "max_grad_norm": 1.0}
    adapter = catalog.add_version(
        "bert", {"adapter_model.safetensors": weights}, format="peft-adapter", task="text-classification",
        recipe={"name": "finetune", "params": {"method": "lora"}}, parents=[(base.id, None)], relation="finetune",
        meta={"adapter": {"base_ref": base.ref, "base_manifest_sha256": base.manifest_sha256}, "privacy": ledger})
    return base, adapter


def test_lineage_dashes_adapter_edges_and_details_show_base_and_privacy(qtbot, catalog, tmp_path):
    from relman.ui.qt_lineage import LineageView
    from relman.ui.qt_models import version_tooltip
    from relman.ui.snapshot import load_snapshot

    base, adapter = _adapter_family(catalog, tmp_path)
    snap = load_snapshot(catalog)
    view = LineageView()
    qtbot.addWidget(view)
    view.set_snapshot(snap, "bert")
    assert view.adapter_edges == [(base.id, adapter.id)]
    assert any(label.startswith("LoRA adapter") for label in view.edge_labels)
    row = snap.by_id()[adapter.id]
    tip = version_tooltip(row)
    assert f"LoRA adapter of {base.ref}" in tip and "ε = 2.5" in tip and "noise σ = 1.1" in tip
    assert "LoRA" not in version_tooltip(snap.by_id()[base.id])


def test_finetune_form_offers_lora_and_dp(qtbot):
    from relman.ui.qt_dialogs import ParamForm

    form = ParamForm(get_recipe("finetune").params)
    qtbot.addWidget(form)
    names = {p.name for p in form.params}
    assert {"method", "r", "alpha", "target_modules", "dp", "target_epsilon", "delta", "max_grad_norm"} <= names
    method = next(p for p in form.params if p.name == "method")
    assert method.choices == ("full", "lora") and method.default == "full"
