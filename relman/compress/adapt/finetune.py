"""Fine-tune / transfer a classification version on a registered labelled dataset.

When the dataset's label set is not covered by the model's labels, the classification head
is replaced by a fresh one for the dataset's labels (config id2label/label2id updated), so
transfer to a new label set is the same recipe. Training stops early when the validation
loss (the dataset's validation split, or a seeded hold-out) stops improving, and the best
epoch's weights are kept. With `adversarial`, each step also trains on an FGSM perturbation
(token embeddings for text, pixels for images), which buys robustness to small input noise.
The number of training samples is recorded so a later FedAvg merge can weight this copy.

`method=lora` trains a LoRA adapter with PEFT instead of every weight (relman.compress.adapt.lora):
the child is a `peft-adapter` version holding only the adapter, the head and a pin to its base.
A `feature-extraction` parent (an encoder such as MiniLM) becomes a text- or image-classifier:
the classification model class is built from the base's config with the dataset's labels, the
encoder weights come from the base, the head is new. `dp=true` trains with DP-SGD (Opacus,
relman.compress.adapt.privacy) and records the privacy ledger and `privacy_epsilon` on the child.

A `causal-lm` parent is instruction-tuned instead (relman.compress.adapt.lm_finetune): the same
parameters, a dataset of prompt/completion or chat rows, the loss on completions only.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from relman.catalog import Metric
from relman.compress.adapt import lora
from relman.compress.adapt import privacy as dp_privacy
from relman.compress.adapt import training as tr
from relman.compress.registry import ModelSource, RecipeOutput
from relman.compress.surgery import current_surgery, load_parent, new_output_folder, save_child, unique_param_count
from relman.errors import RecipeError
from relman.context import WorkContext
from relman.tasks.specs import tasks_with_recipe

HEAD_NAMES = ("classifier", "score")
# lr=0 (the recipe's default) resolves per method. Full fine-tuning moves every pretrained weight,
# so it wants the small BERT-paper rate; a LoRA update starts at zero (B = 0) and is scaled by
# alpha / r, so at 5e-5 it barely leaves zero in a few epochs (issue 29 measured 0.64 accuracy on
# MiniLM, 1.0 at 5e-4; bench_adapt 0.95 at 3e-3); DP-SGD's clipped, noised steps need a larger rate again.
DEFAULT_LR = {("full", False): 5e-5, ("lora", False): 3e-3, ("full", True): 5e-4, ("lora", True): 5e-3}


def learning_rate(params: dict[str, Any]) -> tuple[float, bool]:
    """The learning rate to train with and whether it is the method's default (lr=0)."""
    lr = float(params["lr"])
    if lr > 0:
        return lr, False
    return DEFAULT_LR[(str(params["method"]), bool(params["dp"]))], True


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


def target_task(task: str, dataset: "tr.Dataset", ref: str) -> str:
    """The child's task: the parent's for a classifier; for an encoder, the classifier its rows
    call for (text rows: text-classification, images: image-classification)."""
    if task in tasks_with_recipe("finetune") and tr.classifies_rows(task):
        return task
    if task == "feature-extraction" and task in tasks_with_recipe("finetune"):
        return "image-classification" if dataset.images is not None else "text-classification"
    raise RecipeError(f"finetune trains classifiers (or turns an encoder into one); {ref} is a "
                      f"'{task or 'unknown'}' model")


def encoder_as_classifier(source: ModelSource, task: str, labels: list[str]) -> tuple[nn.Module, list[str]]:
    """The encoder's weights in the classification model class of `task`, with a new head for
    `labels` built from the base config; also returns the modules the base did not provide."""
    import torch
    from transformers import AutoConfig

    from relman.modelio.loading import auto_class

    if source.format != "hf":
        raise RecipeError(f"an encoder becomes a classifier from an 'hf' version; {source.version.ref} is "
                          f"'{source.format}'")
    cfg = AutoConfig.from_pretrained(str(source.folder), local_files_only=True, trust_remote_code=False)
    cfg.num_labels = len(labels)
    cfg.id2label = dict(enumerate(labels))
    cfg.label2id = {label: i for i, label in enumerate(labels)}
    model, info = auto_class(task).from_pretrained(str(source.folder), config=cfg, local_files_only=True,
                                                   trust_remote_code=False, dtype=torch.float32,
                                                   output_loading_info=True)
    return model, lora.fresh_modules(list(info.get("missing_keys") or []), model)


def head_name(model: nn.Module) -> str:
    for name in HEAD_NAMES:
        if isinstance(getattr(model, name, None), nn.Linear):
            return name
    raise RecipeError(f"cannot find the classification head of this {type(model).__name__} "
                      f"(looked for a Linear named {' or '.join(HEAD_NAMES)})")


def run(sources: list[ModelSource], params: dict[str, Any], ctx: WorkContext) -> RecipeOutput:
    source = sources[0]
    if source.task == "causal-lm":  # instruction tuning: its own data and loss (relman.compress.adapt.lm_finetune)
        from relman.compress.adapt import lm_finetune

        return lm_finetune.run(sources, params, ctx)
    ref = source.version.ref
    dataset = tr.load_recipe_dataset(ctx, params["dataset"])
    task = target_task(source.task or "", dataset, ref)
    tr.check_dataset_for_task(dataset, task, need_labels=True)
    method, use_dp = str(params["method"]), bool(params["dp"])
    adversarial, eps, adv_w = bool(params["adversarial"]), float(params["epsilon"]), float(params["adv_weight"])
    if use_dp and adversarial:
        raise RecipeError("dp=true and adversarial=true cannot be combined (the FGSM pass is not clipped per "
                          "example, so the privacy accounting would not hold)")
    device = tr.resolve_device(ctx)
    rng = tr.set_seed(int(params["seed"]))
    ctx.progress(0.02, "loading parent")
    overrides: dict[str, Any] = {}
    fresh: list[str] = []
    if task != source.task:  # an encoder becomes a classifier
        model, fresh = encoder_as_classifier(source, task, list(dataset.label_names))
        new_head = True
        ctx.log("%s is an encoder: new %s model with a head for %s", ref, task, dataset.label_names)
    else:
        model = load_parent(source, device)
        parent_labels = tr.model_label_names(model)
        used = sorted({dataset.label_names[i] for i in set(dataset.labels.tolist())})  # type: ignore[union-attr]
        new_head = not set(used) <= set(parent_labels)
        if new_head:
            replace_head(model, list(dataset.label_names))
            ctx.log("label set differs from the parent's (%s); new head for %s", parent_labels, dataset.label_names)
        else:
            dataset = tr.align_to_model(dataset, parent_labels)
    if new_head:
        overrides = {"num_labels": model.config.num_labels, "id2label": {str(k): v for k, v in
                                                                           model.config.id2label.items()},
                     "label2id": dict(model.config.label2id)}
    model = model.to(device)

    peft_model = None
    if method == "lora":  # targets are checked before any data is batched or any step taken
        targets = lora.check_targets(model, list(params["target_modules"]), ref)
        save = [head_name(model)] + [m for m in fresh if not m.startswith(head_name(model))]
        peft_model = lora.wrap(model, r=int(params["r"]), alpha=float(params["alpha"]),
                               dropout=float(params["lora_dropout"]), targets=targets, modules_to_save=save)
        model = peft_model.get_base_model()
        ctx.log("LoRA r=%s alpha=%s on %s (+ trained: %s)", params["r"], params["alpha"], targets, save)
    if use_dp:  # refuse layers DP-SGD cannot train before any data is read
        dp_privacy.check_layers(model, ref)

    train, val = tr.train_val_split(dataset, float(params["val_fraction"]), int(params["seed"]))
    batcher = tr.Batcher.for_model(source.folder, task, int(params["max_length"]))
    bs, epochs, patience = int(params["batch_size"]), int(params["epochs"]), int(params["patience"])

    acc_before = loss_before = None
    if val is not None:
        acc_before, loss_before = tr.accuracy_and_loss(model, batcher, val, device)
    lr, lr_default = learning_rate(params)
    params["lr"] = lr  # the resolved value is what the child's recipe record shows
    ctx.log("training %s (%s%s) at lr %g%s", ref, method, ", dp" if use_dp else "", lr,
            " (the method's default)" if lr_default else "")
    optimizer = tr.make_optimizer(model, lr, float(params["weight_decay"]))
    private = None
    if use_dp:
        private = dp_privacy.make_private(model, optimizer, len(train), bs, epochs=epochs,
                                          target_epsilon=float(params["target_epsilon"]), delta=float(params["delta"]),
                                          max_grad_norm=float(params["max_grad_norm"]), ref=ref)
        ctx.log("DP-SGD: noise multiplier %.4f, sample rate %.4f, target epsilon %s at delta %s",
                private.noise_multiplier, private.sample_rate, params["target_epsilon"], params["delta"])
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    stopper = tr.EarlyStopping(patience, mode="min")
    if val is not None and loss_before is not None and private is None:
        stopper.update(loss_before, model, 0)  # the parent itself is a candidate: never end worse
    n_batches = len(private.loader) if private is not None else tr.steps_per_epoch(len(train), bs)
    total_steps = epochs * n_batches
    step, epochs_run, loss_fn = 0, 0, nn.CrossEntropyLoss()
    curve = tr.LossCurve(n_batches)
    forward = private.model if private is not None else model
    step_opt = private.optimizer if private is not None else optimizer
    for epoch in range(1, epochs + 1):
        forward.train()
        if private is not None:
            batch_iter = (b[0].numpy() for b in private.loader)
        else:
            batch_iter = tr.batches(len(train), bs, shuffle=True, rng=rng)
        for idx in batch_iter:
            step += 1
            if len(idx) == 0:  # an empty Poisson sample: no update, but the step is accounted
                private.account_skipped_step()  # type: ignore[union-attr]
                continue
            inputs = batcher.inputs(train, idx, device)
            y = tr.labels_tensor(train, idx, device)
            loss = loss_fn(forward(**inputs).logits, y)
            if adversarial:
                loss = (1 - adv_w) * loss + adv_w * tr.fgsm_loss(model, inputs, y, eps)
            step_opt.zero_grad(set_to_none=True)
            loss.backward()
            step_opt.step()
            ctx.point("train_loss", step, float(loss.detach()))
            curve.add(float(loss.detach()))
            ctx.progress(0.05 + 0.85 * step / total_steps, f"epoch {epoch}/{epochs}, loss {float(loss.detach()):.4f}")
        epochs_run = epoch
        if val is not None:
            val_acc, val_loss = tr.accuracy_and_loss(model, batcher, val, device)
            ctx.point("val_loss", step, val_loss)
            ctx.point("val_accuracy", step, val_acc)
            ctx.log("epoch %d: val loss %.4f, val accuracy %.4f", epoch, val_loss, val_acc)
            if private is None and stopper.update(val_loss, model, epoch):
                ctx.log("early stop after epoch %d (best epoch %d)", epoch, stopper.best_step)
                break
    ledger = None
    if private is not None:
        ledger = {**private.ledger(epochs=epochs_run, train_samples=len(train)), "dataset": dataset.name,
                  "dataset_sha256": dataset.sha256}
        private.unwrap()
        ctx.log("privacy spent: epsilon %.4f at delta %g over %d steps", ledger["epsilon"], ledger["delta"],
                ledger["steps"])
    elif val is not None:
        stopper.restore(model)
    acc_after = loss_after = None
    if val is not None:
        acc_after, loss_after = tr.accuracy_and_loss(model, batcher, val, device)
    ctx.progress(0.95, "saving")
    out = new_output_folder(ctx, "finetune")
    meta: dict[str, Any] = {}
    if peft_model is not None:
        pin = lora.make_pin(source.version, task, source.task or task, overrides, int(params["r"]),
                            float(params["alpha"]), targets, save)
        model.to("cpu")
        lora.save_adapter(peft_model, out, pin)
        fmt, n_params = lora.peft_adapter.FORMAT, n_trainable
        meta["adapter"] = {k: pin[k] for k in ("base_version_id", "base_ref", "base_manifest_sha256", "base_format",
                                               "r", "lora_alpha", "target_modules", "modules_to_save")}
        meta["composed_params"] = unique_param_count(model)
    else:
        fmt = save_child(model, source.folder, out, current_surgery(model))
        n_params = unique_param_count(model)
    context = {"dataset": dataset.name, "dataset_sha256": dataset.sha256, "split": "validation"}
    metrics = [Metric("compress", "train_samples", float(len(train)), context),
               Metric("compress", "epochs_run", float(epochs_run), {"best_epoch": stopper.best_step}),
               Metric("compress", "trainable_params", float(n_trainable), {"method": method})]
    if acc_after is not None:
        if acc_before is not None:
            metrics.append(Metric("compress", "val_accuracy_before", acc_before, context))
        metrics += [Metric("compress", "val_accuracy", acc_after, context),
                    Metric("compress", "val_loss", loss_after, context)]
    if ledger is not None:
        metrics.append(dp_privacy.metric(ledger))
        meta["privacy"] = ledger
    verdict = tr.convergence(curve, acc_after, val.labels if val is not None else None)
    metrics.append(Metric("compress", "training_converged", 1.0 if verdict.converged else 0.0, verdict.as_dict()))
    if not verdict.converged:
        meta["did_not_converge"] = verdict.reason
        meta["warning"] = f"did not converge: {verdict.reason}"
        ctx.log("DID NOT CONVERGE: %s", verdict.reason)
    ctx.progress(1.0, "fine-tuned" + (f", validation accuracy {acc_after:.3f}" if acc_after is not None else "")
                 + ("" if verdict.converged else f"; DID NOT CONVERGE ({verdict.reason})"))
    meta.update({"train_samples": len(train), "validation_samples": len(val) if val is not None else 0,
                 "new_head": new_head, "labels": tr.model_label_names(model), "dataset": dataset.name,
                 "epochs_run": epochs_run, "best_epoch": stopper.best_step, "adversarial": adversarial,
                 "method": method, "dp": use_dp, "trainable_params": n_trainable, "lr": lr,
                 "lr_default": lr_default, "converged": verdict.converged, "convergence": verdict.as_dict(),
                 "val_accuracy_before": acc_before, "val_accuracy": acc_after})
    return RecipeOutput(folder=out, format=fmt, params=n_params, dtype="float32", task=task, meta=meta,
                        metrics=metrics)
