"""Knowledge distillation: a smaller student learns to reproduce the teacher (the parent).

The student is either a new, smaller copy of the teacher's config (`student_layers` fewer
layers, `student_hidden` narrower) or an existing version given as a second parent. A new
student of the teacher's width starts from evenly spaced teacher layers (as DistilBERT does),
and a narrower one from the leading slice of each teacher tensor; both converge far faster
than random weights.

Loss, per batch: classifiers: alpha · KL(student/T ‖ teacher/T) · T² on temperature-softened
logits (the T² keeps gradient scale independent of T, Hinton et al.), plus (1 - alpha) ·
cross-entropy on the labels when the dataset has them. Feature extractors have no logits:
the student matches the teacher's mean-pooled embedding (MSE + cosine), which needs the same
embedding width. Runs on the job's device; the loss curve goes to `ctx.point("train_loss")`.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import torch
from torch import nn

from relman.catalog import Metric
from relman.compress.adapt import training as tr
from relman.compress.registry import ModelSource, RecipeOutput
from relman.compress.surgery import (
    SURGERY_KEY,
    current_surgery,
    load_parent,
    new_output_folder,
    save_child,
    unique_param_count,
)
from relman.data.dataset import Dataset
from relman.errors import RecipeError
from relman.context import WorkContext
from relman.modelio.loading import auto_class
from relman.tasks.specs import get_task, tasks_with_recipe

_LAYER_INDEX = re.compile(r"\.(layer|layers|h)\.(\d+)\.")


# -- the student --------------------------------------------------------------------------
def student_config(teacher: nn.Module, layers: int, hidden: int) -> Any:
    cfg = copy.deepcopy(teacher.config)
    if hasattr(cfg, SURGERY_KEY):
        delattr(cfg, SURGERY_KEY)  # a new student has the plain shapes of its config
    t_layers, t_hidden = int(cfg.num_hidden_layers), int(cfg.hidden_size)
    if layers > t_layers or hidden > t_hidden:
        raise RecipeError(f"the student must not be larger than the teacher ({t_layers} layers, hidden size "
                          f"{t_hidden}); got {layers} layers, hidden size {hidden}")
    if layers:
        cfg.num_hidden_layers = layers
    if hidden and hidden != t_hidden:
        head_dim = t_hidden // int(cfg.num_attention_heads)
        heads = max(1, hidden // head_dim)
        while hidden % heads:
            heads -= 1
        cfg.hidden_size, cfg.num_attention_heads = hidden, heads
        if getattr(cfg, "intermediate_size", None):
            cfg.intermediate_size = max(1, round(cfg.intermediate_size * hidden / t_hidden))
        if hasattr(cfg, "head_dim"):
            cfg.head_dim = hidden // heads
    return cfg


def teacher_layer_map(n_student: int, n_teacher: int) -> list[int]:
    """Evenly spaced teacher layers, first and last included."""
    if n_student == 1:
        return [n_teacher - 1]
    return [round(i * (n_teacher - 1) / (n_student - 1)) for i in range(n_student)]


def init_from_teacher(student: nn.Module, teacher: nn.Module) -> int:
    """Start the student from the teacher: every tensor with a (layer-mapped) teacher
    counterpart at least as large gets its leading slice; returns how many."""
    t_state = teacher.state_dict()
    s_layers = int(student.config.num_hidden_layers)
    mapping = teacher_layer_map(s_layers, int(teacher.config.num_hidden_layers))
    copied = 0
    new_state = student.state_dict()
    for key, tensor in new_state.items():
        m = _LAYER_INDEX.search(key)
        t_key = key
        if m:
            i = int(m.group(2))
            if i >= len(mapping):
                continue
            t_key = key[:m.start()] + f".{m.group(1)}.{mapping[i]}." + key[m.end():]
        src = t_state.get(t_key)
        if src is None or src.ndim != tensor.ndim or any(a < b for a, b in zip(src.shape, tensor.shape)):
            continue
        # same shape: copied; narrower: the leading slice ("weight selection", Xu et al. 2023),
        # which starts a narrow student far closer to the teacher than random weights do
        new_state[key] = src.detach()[tuple(slice(0, n) for n in tensor.shape)].clone()
        copied += 1
    student.load_state_dict(new_state)
    return copied


def check_student(student: nn.Module, teacher: nn.Module, task: str, ref: str) -> None:
    t_vocab, s_vocab = getattr(teacher.config, "vocab_size", None), getattr(student.config, "vocab_size", None)
    if tr.modality(task) == "text" and t_vocab != s_vocab:
        raise RecipeError(f"student {ref} has a vocabulary of {s_vocab} tokens, the teacher {t_vocab}: they "
                          "must read the same token ids")
    if tr.classifies_rows(task):
        t_labels, s_labels = tr.model_label_names(teacher), tr.model_label_names(student)
        if t_labels != s_labels:
            raise RecipeError(f"student {ref} predicts {len(s_labels)} labels ({', '.join(s_labels)}) and the "
                              f"teacher {len(t_labels)} ({', '.join(t_labels)}): their logits cannot be compared")
    elif int(student.config.hidden_size) != int(teacher.config.hidden_size):
        raise RecipeError(f"a feature-extraction student must keep the teacher's embedding width "
                          f"({teacher.config.hidden_size}), got {student.config.hidden_size}: there are no "
                          "logits to distil, only embeddings to match")


# -- losses -------------------------------------------------------------------------------
def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    t = temperature
    return nn.functional.kl_div(nn.functional.log_softmax(student_logits / t, -1),
                                nn.functional.softmax(teacher_logits / t, -1), reduction="batchmean") * t * t


def pooled(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return hidden.mean(1)
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


def embedding_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(s, t) + (1 - nn.functional.cosine_similarity(s, t, dim=-1)).mean()


class Objective:
    """The distillation loss of one batch, and how well the student agrees with the teacher."""

    def __init__(self, task: str, temperature: float, alpha: float, use_labels: bool) -> None:
        self.task, self.t, self.alpha, self.use_labels = task, temperature, alpha, use_labels
        # an embedding model (the task table's output is the hidden state) is distilled by
        # matching pooled embeddings; a classifier by its softened logits
        self.embeddings = get_task(task, RecipeError).output == "last_hidden_state"

    def __call__(self, student: nn.Module, teacher: nn.Module, inputs: dict[str, torch.Tensor],
                 labels: torch.Tensor | None) -> tuple[torch.Tensor, float]:
        with torch.no_grad():
            t_out = teacher(**inputs)
        s_out = student(**inputs)
        if self.embeddings:
            mask = inputs.get("attention_mask")
            s, t = pooled(s_out.last_hidden_state, mask), pooled(t_out.last_hidden_state, mask)
            agreement = float(nn.functional.cosine_similarity(s.detach(), t, dim=-1).mean())
            return embedding_loss(s, t), agreement
        loss = self.alpha * soft_target_loss(s_out.logits, t_out.logits, self.t) if self.alpha > 0 else 0.0
        if self.use_labels and labels is not None and self.alpha < 1:
            loss = loss + (1 - self.alpha) * nn.functional.cross_entropy(s_out.logits, labels)
        agreement = float((s_out.logits.argmax(-1) == t_out.logits.argmax(-1)).float().mean())
        return loss, agreement  # type: ignore[return-value]


@torch.no_grad()
def evaluate(student: nn.Module, teacher: nn.Module, objective: Objective, batcher: tr.Batcher, data: Dataset,
             device: str, use_labels: bool) -> tuple[float, float]:
    student.eval()
    total_loss = total_agree = 0.0
    n = 0
    for idx in tr.batches(len(data), 64, shuffle=False):
        y = tr.labels_tensor(data, idx, device) if use_labels else None
        loss, agree = objective(student, teacher, batcher.inputs(data, idx, device), y)
        total_loss += float(loss) * len(idx)
        total_agree += agree * len(idx)
        n += len(idx)
    student.train()
    return total_loss / max(1, n), total_agree / max(1, n)


# -- the training loop both the recipe and the recovery step run --------------------------
def distill_epochs(student: nn.Module, teacher: nn.Module, objective: "Objective", batcher: Any, train: Any,
                   optimizer: Any, *, batch_size: int, epochs: int, rng: Any, device: str, use_labels: bool,
                   ctx: WorkContext, progress_from: float, progress_span: float,
                   label: str = "epoch") -> tuple[list[float], int]:
    """Train `student` on `teacher`'s outputs; streams the loss curve (`train_loss`) and
    progress through `ctx`. Returns (mean loss of each epoch, steps taken)."""
    total = epochs * tr.steps_per_epoch(len(train), batch_size)
    epoch_losses: list[float] = []
    step = 0
    student.train()
    for epoch in range(1, epochs + 1):
        losses = []
        for idx in tr.batches(len(train), batch_size, shuffle=True, rng=rng):
            y = tr.labels_tensor(train, idx, device) if use_labels else None
            loss, _ = objective(student, teacher, batcher.inputs(train, idx, device), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            value = float(loss.detach())
            losses.append(value)
            ctx.point("train_loss", step, value)
            ctx.progress(progress_from + progress_span * step / total, f"{label} {epoch}/{epochs}, loss {value:.4f}")
        epoch_losses.append(sum(losses) / len(losses))
        ctx.log("%s %d: mean distillation loss %.5f", label, epoch, epoch_losses[-1])
    return epoch_losses, step


# -- recovery after structural edits (pruning, factorisation) -----------------------------
def recover_by_distillation(model: nn.Module, parent: nn.Module, source: ModelSource, params: dict[str, Any],
            ctx: WorkContext, device: str) -> list[float]:
    """Distil the unedited parent into the edited model for a few epochs (params: dataset,
    epochs, lr, batch_size, max_length, seed); returns the mean loss of each epoch."""
    task = source.task or ""
    if task not in tasks_with_recipe("distill"):
        raise RecipeError(f"the recovery fine-tune handles classifiers and feature extractors, not '{task}'")
    dataset = tr.load_recipe_dataset(ctx, params["dataset"])
    tr.check_dataset_for_task(dataset, task)
    use_labels = tr.classifies_rows(task) and dataset.has_labels
    if use_labels:
        dataset = tr.align_to_model(dataset, tr.model_label_names(parent))
    train = dataset.subset("train") if dataset.split is not None and len(dataset.subset("train")) else dataset
    rng = tr.set_seed(int(params["seed"]))
    batcher = tr.Batcher.for_model(source.folder, task, int(params["max_length"]))
    objective = Objective(task, 2.0, 0.5, use_labels)
    optimizer = tr.make_optimizer(model, float(params["lr"]))
    model.to(device)
    parent.to(device).eval()
    epoch_losses, _ = distill_epochs(model, parent, objective, batcher, train, optimizer,
                                     batch_size=int(params["batch_size"]), epochs=int(params["epochs"]), rng=rng,
                                     device=device, use_labels=use_labels, ctx=ctx, progress_from=0.4,
                                     progress_span=0.5, label="recovery epoch")
    model.eval()
    return epoch_losses


# -- the recipe ---------------------------------------------------------------------------
def run(sources: list[ModelSource], params: dict[str, Any], ctx: WorkContext) -> RecipeOutput:
    teacher_src = sources[0]
    task = teacher_src.task or ""
    if task not in tasks_with_recipe("distill"):
        raise RecipeError(f"distill handles classifiers and feature extractors; {teacher_src.version.ref} is a "
                          f"'{task or 'unknown'}' model")
    if len(sources) > 2:
        raise RecipeError("distill takes the teacher and at most one existing student version")
    alpha, temperature = float(params["alpha"]), float(params["temperature"])
    dataset = tr.load_recipe_dataset(ctx, params["dataset"])
    tr.check_dataset_for_task(dataset, task)
    use_labels = tr.classifies_rows(task) and dataset.has_labels and alpha < 1
    if tr.classifies_rows(task) and alpha == 0 and not dataset.has_labels:
        raise RecipeError(f"alpha=0 trains on labels only, but dataset '{dataset.name}' has no labels; "
                          "raise alpha to learn from the teacher's logits")
    device = tr.resolve_device(ctx)
    rng = tr.set_seed(int(params["seed"]))
    ctx.progress(0.02, "loading teacher")
    teacher = load_parent(teacher_src, device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    if use_labels:
        dataset = tr.align_to_model(dataset, tr.model_label_names(teacher))

    copied = 0
    if len(sources) == 2:
        student_src = sources[1]
        if student_src.task != task:
            raise RecipeError(f"student {student_src.version.ref} is a '{student_src.task}' model, the teacher "
                              f"a '{task}' model")
        student = load_parent(student_src, device)
        student_ref = student_src.version.ref
        surgery = current_surgery(student)
    else:
        layers, hidden = int(params["student_layers"]), int(params["student_hidden"])
        if not layers and not hidden:
            raise RecipeError("describe the student: set student_layers and/or student_hidden, or give an "
                              "existing version as a second parent")
        cfg = student_config(teacher, layers, hidden)
        student = auto_class(task).from_config(cfg)
        copied = init_from_teacher(student, teacher)
        student = student.to(device)
        student_ref, surgery = "new student", {}
    check_student(student, teacher, task, student_ref)
    n_teacher, n_student = unique_param_count(teacher), unique_param_count(student)

    train, val = tr.train_val_split(dataset, 0.1, int(params["seed"]))
    batcher = tr.Batcher.for_model(teacher_src.folder, task, int(params["max_length"]))
    objective = Objective(task, temperature, alpha, use_labels)
    optimizer = tr.make_optimizer(student, float(params["lr"]))
    epoch_losses, step = distill_epochs(student, teacher, objective, batcher, train, optimizer,
                                        batch_size=int(params["batch_size"]), epochs=int(params["epochs"]),
                                        rng=rng, device=device, use_labels=use_labels, ctx=ctx,
                                        progress_from=0.05, progress_span=0.85)
    held_out = val if val is not None else train
    val_loss, agreement = evaluate(student, teacher, objective, batcher, held_out, device, use_labels)
    ctx.point("val_loss", step, val_loss)

    ctx.progress(0.95, "saving student")
    out = new_output_folder(ctx, "distill")
    fmt = save_child(student, teacher_src.folder, out, surgery)
    agree_name = "teacher_cosine" if objective.embeddings else "teacher_agreement"
    context = {"dataset": dataset.name, "dataset_sha256": dataset.sha256, "temperature": temperature, "alpha": alpha}
    ctx.progress(1.0, f"student has {n_student / n_teacher:.0%} of the teacher's parameters")
    return RecipeOutput(
        folder=out, format=fmt, params=n_student, dtype="float32",
        meta={"teacher": teacher_src.version.ref, "student": student_ref, "teacher_params": n_teacher,
              "student_params": n_student, "tensors_from_teacher": copied, "epoch_losses": epoch_losses,
              "labels_used": use_labels, "train_samples": len(train),
              "student_layers": int(student.config.num_hidden_layers),
              "student_hidden": int(student.config.hidden_size)},
        metrics=[Metric("compress", "param_ratio", n_student / n_teacher, {"teacher_params": n_teacher}),
                 Metric("compress", "distill_loss_first_epoch", epoch_losses[0], context),
                 Metric("compress", "distill_loss_last_epoch", epoch_losses[-1], context),
                 Metric("compress", "distill_val_loss", val_loss, context),
                 Metric("compress", agree_name, agreement, context)],
    )
