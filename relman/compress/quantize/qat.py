"""Quantisation-aware training (recipe "qat"): fine-tune with fake-quantised weights and
activations, then convert to the ONNX INT8 graph relman already evaluates and ships.

Post-training INT8 rounds weights and activations the model never saw rounded; where a few
outliers set the quantisation range (an activation channel far larger than the rest, a weight
row with one big entry) everything else falls onto a coarse grid and accuracy drops. QAT trains
with the rounding in the forward pass (straight-through gradients), so the weights move to where
the rounded model still works.

How: torchao's QAT (`QATConfig`, step "prepare") swaps every Linear of the encoder for one that
fake-quantises its weight (INT8 symmetric, one scale per output channel) and its input (INT8
asymmetric, one scale per token, computed on the fly); the classifier trains as in `finetune`
for `epochs`, with fake quantisation from epoch `fake_quant_start` on (the earlier epochs are
plain float warm-up). torchao computes every scale from the current tensor on each step, so
there are no observers to freeze: `freeze_observers` is recorded as "not applicable". Step
"convert" removes the fake quantisers, leaving float weights that have learned the INT8 grid;
those are then quantised by exactly the `ort-int8` recipe (dynamic, per channel by default —
the scheme the fake quantisers simulated) so the child is the same ONNX INT8 format a PTQ child
is. With `compare_ptq` the parent is quantised the same way too, and the child records the
validation accuracy of the float parent, of its PTQ INT8 and of the QAT INT8, and the share of
PTQ's loss QAT recovered (`qat_recovered_fraction`).

torchao's fake quantisers have no per-tensor granularity for weights, hence the default
`per_channel=true` on the conversion: the schedule trains against the grid it is converted to.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from relman.catalog import Metric
from relman.compress.adapt import training as tr
from relman.compress.registry import ModelSource, RecipeOutput, get_recipe
from relman.context import WorkContext
from relman.errors import RecipeError

TASKS = ("text-classification", "image-classification")
DEFAULT_LR = 5e-5  # a fine-tune of an already trained classifier


def fake_quant_configs() -> tuple[Any, Any]:
    """(activation, weight) fake-quantiser configs: the INT8 scheme the conversion uses."""
    import torch
    from torchao.quantization.granularity import PerAxis, PerToken
    from torchao.quantization.qat import IntxFakeQuantizeConfig

    activation = IntxFakeQuantizeConfig(torch.int8, granularity=PerToken(), is_symmetric=False)
    weight = IntxFakeQuantizeConfig(torch.int8, granularity=PerAxis(0), is_symmetric=True)
    return activation, weight


def prepare(model: Any) -> int:
    """Fake-quantise every Linear, the classification head included (ort-int8 quantises it
    too); returns how many Linear layers were prepared."""
    from torch import nn
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    activation, weight = fake_quant_configs()
    before = sum(1 for m in model.modules() if type(m) is nn.Linear)
    quantize_(model, QATConfig(activation_config=activation, weight_config=weight, step="prepare"))
    after = sum(1 for m in model.modules() if type(m) is nn.Linear)
    return before - after


def convert(model: Any) -> None:
    """Remove the fake quantisers (plain Linear layers holding the QAT-trained weights)."""
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    quantize_(model, QATConfig(step="convert"))


def onnx_accuracy(onnx_path: Any, folder: Any, task: str, dataset: "tr.Dataset", max_length: int) -> float:
    """Accuracy of an ONNX classifier on labelled rows (labels in the model's order)."""
    import json

    from relman.compress.export.onnx_export import run_onnx
    from relman.compress.quantize.quant_ort import encode_dataset

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    feeds = encode_dataset(folder, task, dataset, max_length, config)
    n = len(dataset)
    batches = [{k: v[i:i + 64] for k, v in feeds.items()} for i in range(0, n, 64)]
    logits = np.concatenate([np.asarray(o) for o in run_onnx(onnx_path, batches)])
    return float((logits.argmax(-1) == np.asarray(dataset.labels)).mean())


def _int8(ctx: WorkContext, source: ModelSource, params: dict[str, Any], sub: str) -> RecipeOutput:
    """`source` quantised by the ort-int8 recipe (its own scratch folder)."""
    recipe = get_recipe("ort-int8")
    ort_params = recipe.resolve_params({"mode": params["int8_mode"], "per_channel": params["per_channel"],
                                        "dataset": params["dataset"] if isinstance(params["dataset"], str) else "",
                                        "max_length": params["max_length"]})
    saved = ctx.workdir
    ctx.workdir = saved / sub
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    try:
        return recipe.function()([source], ort_params, ctx)
    finally:
        ctx.workdir = saved


def check(source: ModelSource, params: dict[str, Any]) -> None:
    ref = source.version.ref
    if source.task not in TASKS:
        raise RecipeError(f"qat trains classifiers ({', '.join(TASKS)}); {ref} is a '{source.task or 'unknown'}' model")
    if source.format != "hf":
        raise RecipeError(f"qat needs a plain Hugging Face parent; {ref} is '{source.format}'")
    if not params["dataset"]:
        raise RecipeError("qat trains on labelled rows: pass --param dataset=NAME (a registered labelled dataset)")
    if int(params["fake_quant_start"]) >= int(params["epochs"]):
        raise RecipeError(f"fake_quant_start={params['fake_quant_start']} leaves no epoch with fake quantisation "
                          f"(epochs={params['epochs']})")


def run(sources: list[ModelSource], params: dict[str, Any], ctx: WorkContext) -> RecipeOutput:
    """Recipe "qat"."""
    from torch import nn

    from relman.compress.surgery import load_parent, save_child

    source = sources[0]
    if source.task == "causal-lm" or params.get("precision") == "int4":
        if source.task != "causal-lm":
            raise RecipeError(f"qat precision=int4 (weight-only) is for causal LMs; {source.version.ref} is a "
                              f"'{source.task or 'unknown'}' model (use precision=int8)")
        from relman.compress.quantize import qat_lm

        return qat_lm.run(sources, {**params, "lr": float(params["lr"]) or qat_lm.DEFAULT_LR}, ctx)
    params = {**params, "lr": float(params["lr"]) or DEFAULT_LR}
    check(source, params)
    ref, task = source.version.ref, str(source.task)
    dataset = tr.load_recipe_dataset(ctx, params["dataset"])
    tr.check_dataset_for_task(dataset, task, need_labels=True)
    rng = tr.set_seed(int(params["seed"]))
    ctx.progress(0.02, "loading parent")
    model = load_parent(source, "cpu").float()
    labels = tr.model_label_names(model)
    used = sorted({dataset.label_names[i] for i in set(dataset.labels.tolist())})  # type: ignore[union-attr]
    if not set(used) <= set(labels):
        raise RecipeError(f"dataset '{dataset.name}' has labels {', '.join(l for l in used if l not in labels)} "
                          f"that {ref} does not predict ({', '.join(labels)}); fine-tune it first")
    dataset = tr.align_to_model(dataset, labels)
    train, val = tr.train_val_split(dataset, float(params["val_fraction"]), int(params["seed"]))
    if val is None:
        raise RecipeError(f"qat needs validation rows to measure what quantisation costs; dataset '{dataset.name}' "
                          "has no validation split and val_fraction is 0")
    batcher = tr.Batcher.for_model(source.folder, task, int(params["max_length"]))
    bs, epochs, start = int(params["batch_size"]), int(params["epochs"]), int(params["fake_quant_start"])
    lr = float(params["lr"])
    optimizer = tr.make_optimizer(model, lr, float(params["weight_decay"]))
    loss_fn, step, prepared = nn.CrossEntropyLoss(), 0, 0
    total = epochs * tr.steps_per_epoch(len(train), bs)
    for epoch in range(epochs):
        if epoch == start:
            prepared = prepare(model)
            optimizer = tr.make_optimizer(model, lr, float(params["weight_decay"]))  # the swapped layers' params
            ctx.log("epoch %d: fake quantisation on (%d Linear layers)", epoch + 1, prepared)
        model.train()
        for idx in tr.batches(len(train), bs, shuffle=True, rng=rng):
            step += 1
            loss = loss_fn(model(**batcher.inputs(train, idx, "cpu")).logits, tr.labels_tensor(train, idx, "cpu"))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            ctx.point("train_loss", step, float(loss.detach()))
            ctx.progress(0.05 + 0.6 * step / total, f"epoch {epoch + 1}/{epochs}, loss {float(loss.detach()):.4f}")
        ctx.check_cancelled()
        fq_acc, _ = tr.accuracy_and_loss(model, batcher, val, "cpu")
        ctx.point("val_accuracy_fake_quant" if epoch >= start else "val_accuracy", step, fq_acc)
        ctx.log("epoch %d: validation accuracy %.4f (%s)", epoch + 1, fq_acc,
                "fake-quantised" if epoch >= start else "float")
    convert(model)
    if any("FakeQuant" in type(m).__name__ for m in model.modules()):
        raise RecipeError("torchao's QAT convert left fake-quantised layers behind; nothing stored")
    trained = ctx.workdir / "qat-float"
    save_child(model, source.folder, trained)
    del model
    ctx.progress(0.7, "converting to ONNX INT8")
    qat_source = ModelSource(dataclasses.replace(source.version, format="hf"), trained)
    out = _int8(ctx, qat_source, params, "convert")
    from relman.compress.export.onnx_export import ONNX_FILE

    max_len = int(params["max_length"])
    qat_acc = onnx_accuracy(out.folder / ONNX_FILE, out.folder, task, val, max_len)
    context = {"dataset": dataset.name, "dataset_sha256": dataset.sha256, "split": "validation",
               "int8": f"ort-int8 {params['int8_mode']}, per_channel={params['per_channel']}"}
    metrics = [m for m in out.metrics if m.name != "max_abs_diff_vs_parent"]  # that one is vs the QAT float
    metrics.append(Metric("compress", "val_accuracy", qat_acc, context))
    schedule = {"epochs": epochs, "lr": lr, "batch_size": bs, "weight_decay": float(params["weight_decay"]),
                "fake_quant_start_epoch": start + 1, "float_warmup_epochs": start,
                "freeze_observers": "not applicable: torchao computes each scale from the current tensor",
                "weights": "INT8 symmetric, per output channel (torchao IntxFakeQuantizeConfig)",
                "activations": "INT8 asymmetric, per token, dynamic (torchao IntxFakeQuantizeConfig)",
                "prepared_linear_layers": prepared, "train_samples": len(train), "validation_samples": len(val),
                "conversion": f"torchao QATConfig convert, then ort-int8 mode={params['int8_mode']} "
                              f"per_channel={params['per_channel']}"}
    meta: dict[str, Any] = {**out.meta, "qat": schedule, "dataset": dataset.name}
    if params["compare_ptq"]:
        ctx.progress(0.85, "measuring the parent and its post-training INT8")
        from relman.compress.export.onnx_export import onnx_source

        ptq = _int8(ctx, source, params, "ptq")
        ptq_acc = onnx_accuracy(ptq.folder / ONNX_FILE, ptq.folder, task, val, max_len)
        fp32_onnx, _ = onnx_source(source.folder, "hf", task, ctx.workdir / "fp32", tolerance=1e-3)
        fp32_acc = onnx_accuracy(fp32_onnx, source.folder, task, val, max_len)
        lost = fp32_acc - ptq_acc
        recovered = (qat_acc - ptq_acc) / lost if lost > 0 else None
        meta["qat"].update({"val_accuracy_parent_fp32": fp32_acc, "val_accuracy_ptq_int8": ptq_acc,
                            "val_accuracy_qat_int8": qat_acc, "recovered_fraction": recovered})
        metrics += [Metric("compress", "val_accuracy_parent_fp32", fp32_acc, context),
                    Metric("compress", "val_accuracy_ptq_int8", ptq_acc, context)]
        if recovered is not None:
            metrics.append(Metric("compress", "qat_recovered_fraction", recovered,
                                  {**context, "rule": "(QAT INT8 - PTQ INT8) / (parent fp32 - PTQ INT8)"}))
        ctx.log("validation accuracy: parent %.4f, PTQ INT8 %.4f, QAT INT8 %.4f", fp32_acc, ptq_acc, qat_acc)
    ctx.progress(1.0, f"QAT INT8, validation accuracy {qat_acc:.3f}")
    return RecipeOutput(folder=out.folder, format=out.format, params=out.params, dtype="int8", task=task,
                        meta=meta, metrics=metrics)
