"""Fine-tune / transfer a classification version on a registered labelled dataset.

When the dataset's label set is not covered by the model's labels, the classification head
is replaced by a fresh one for the dataset's labels (config id2label/label2id updated), so
transfer to a new label set is the same recipe. Training stops early when the validation
loss (the dataset's validation split, or a seeded hold-out) stops improving, and the best
epoch's weights are kept. With `adversarial`, each step also trains on an FGSM perturbation
(token embeddings for text, pixels for images), which buys robustness to small input noise.
The number of training samples is recorded so a later FedAvg merge can weight this copy.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from relman.catalog import Metric
from relman.compress import training as tr
from relman.compress.registry import ModelSource, RecipeOutput
from relman.compress.surgery import current_surgery, load_parent, new_output_folder, save_child, unique_param_count
from relman.errors import RecipeError
from relman.context import WorkContext
from relman.tasks.specs import tasks_with_recipe

HEAD_NAMES = ("classifier", "score")


def replace_head(model: nn.Module, labels: list[str]) -> str:
    """A new, freshly initialised output layer for `labels`; returns its attribute name."""
    for name in HEAD_NAMES:
        head = getattr(model, name, None)
        if isinstance(head, nn.Linear):
            new = nn.Linear(head.in_features, len(labels), bias=head.bias is not None)
            std = float(getattr(model.config, "initializer_range", 0.02))
            nn.init.normal_(new.weight, std=std)
            if new.bias is not None:
                nn.init.zeros_(new.bias)
            setattr(model, name, new.to(head.weight.device))
            model.config.num_labels = len(labels)
            model.config.id2label = dict(enumerate(labels))
            model.config.label2id = {label: i for i, label in enumerate(labels)}
            return name
    raise RecipeError(f"cannot find the classification head of this {type(model).__name__} to replace "
                      f"(looked for a Linear named {' or '.join(HEAD_NAMES)})")


def run(sources: list[ModelSource], params: dict[str, Any], ctx: WorkContext) -> RecipeOutput:
    source = sources[0]
    task = source.task or ""
    if task not in tasks_with_recipe("finetune"):
        raise RecipeError(f"finetune trains classifiers; {source.version.ref} is a '{task or 'unknown'}' model")
    dataset = tr.load_recipe_dataset(ctx, params["dataset"])
    tr.check_dataset_for_task(dataset, task, need_labels=True)
    device = tr.resolve_device(ctx)
    rng = tr.set_seed(int(params["seed"]))
    ctx.progress(0.02, "loading parent")
    model = load_parent(source, device)
    parent_labels = tr.model_label_names(model)
    used = sorted({dataset.label_names[i] for i in set(dataset.labels.tolist())})  # type: ignore[union-attr]
    new_head = not set(used) <= set(parent_labels)
    if new_head:
        replace_head(model, list(dataset.label_names))
        ctx.log("label set differs from the parent's (%s); new head for %s", parent_labels, dataset.label_names)
    else:
        dataset = tr.align_to_model(dataset, parent_labels)
    train, val = tr.train_val_split(dataset, float(params["val_fraction"]), int(params["seed"]))
    batcher = tr.Batcher.for_model(source.folder, task, int(params["max_length"]))
    bs, epochs, patience = int(params["batch_size"]), int(params["epochs"]), int(params["patience"])
    adversarial, eps, adv_w = bool(params["adversarial"]), float(params["epsilon"]), float(params["adv_weight"])

    acc_before = loss_before = None
    if val is not None:
        acc_before, loss_before = tr.accuracy_and_loss(model, batcher, val, device)
    optimizer = tr.make_optimizer(model, float(params["lr"]), float(params["weight_decay"]))
    stopper = tr.EarlyStopping(patience, mode="min")
    if val is not None:
        stopper.update(loss_before, model, 0)  # the parent itself is a candidate: never end worse
    total_steps = epochs * tr.steps_per_epoch(len(train), bs)
    step, epochs_run, loss_fn = 0, 0, nn.CrossEntropyLoss()
    for epoch in range(1, epochs + 1):
        model.train()
        for idx in tr.batches(len(train), bs, shuffle=True, rng=rng):
            inputs = batcher.inputs(train, idx, device)
            y = tr.labels_tensor(train, idx, device)
            loss = loss_fn(model(**inputs).logits, y)
            if adversarial:
                loss = (1 - adv_w) * loss + adv_w * tr.fgsm_loss(model, inputs, y, eps)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            ctx.point("train_loss", step, float(loss.detach()))
            ctx.progress(0.05 + 0.85 * step / total_steps, f"epoch {epoch}/{epochs}, loss {float(loss.detach()):.4f}")
        epochs_run = epoch
        if val is not None:
            val_acc, val_loss = tr.accuracy_and_loss(model, batcher, val, device)
            ctx.point("val_loss", step, val_loss)
            ctx.point("val_accuracy", step, val_acc)
            ctx.log("epoch %d: val loss %.4f, val accuracy %.4f", epoch, val_loss, val_acc)
            if stopper.update(val_loss, model, epoch):
                ctx.log("early stop after epoch %d (best epoch %d)", epoch, stopper.best_step)
                break
    if val is not None:
        stopper.restore(model)
    acc_after = loss_after = None
    if val is not None:
        acc_after, loss_after = tr.accuracy_and_loss(model, batcher, val, device)
    ctx.progress(0.95, "saving")
    out = new_output_folder(ctx, "finetune")
    fmt = save_child(model, source.folder, out, current_surgery(model))
    context = {"dataset": dataset.name, "dataset_sha256": dataset.sha256, "split": "validation"}
    metrics = [Metric("compress", "train_samples", float(len(train)), context),
               Metric("compress", "epochs_run", float(epochs_run), {"best_epoch": stopper.best_step})]
    if acc_after is not None:
        metrics += [Metric("compress", "val_accuracy_before", acc_before, context),
                    Metric("compress", "val_accuracy", acc_after, context),
                    Metric("compress", "val_loss", loss_after, context)]
    ctx.progress(1.0, "fine-tuned" + (f", validation accuracy {acc_after:.3f}" if acc_after is not None else ""))
    return RecipeOutput(
        folder=out, format=fmt, params=unique_param_count(model), dtype="float32",
        meta={"train_samples": len(train), "validation_samples": len(val) if val is not None else 0,
              "new_head": new_head, "labels": tr.model_label_names(model), "dataset": dataset.name,
              "epochs_run": epochs_run, "best_epoch": stopper.best_step, "adversarial": adversarial,
              "val_accuracy_before": acc_before, "val_accuracy": acc_after},
        metrics=metrics,
    )
