"""Training-loop pieces shared by the recipes that train (fine-tune, distill, the recovery
fine-tune after structured pruning): dataset loading and checks, batching a Dataset into
model inputs, train/validation split, optimiser, early stopping, FGSM, accuracy.

Kept as small functions rather than a Trainer class so each recipe's loop stays readable
and reports its own progress and loss curve through the WorkContext.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch
from torch import nn

from relman.data.dataset import Dataset
from relman.errors import RecipeError
from relman.modelio.loading import load_preprocessor
from relman.tasks.specs import find_task, get_task

if TYPE_CHECKING:
    from pathlib import Path

    from relman.context import WorkContext


def classifies_rows(task: str | None) -> bool:
    """One class per row (the task table's `labels == "row"`): trained with cross-entropy."""
    spec = find_task(task)
    return spec is not None and spec.classifies_rows


def modality(task: str | None) -> str:
    """'image' or 'text': what the model reads (from the task table)."""
    return get_task(task, RecipeError).modality


# -- datasets ---------------------------------------------------------------------------------
def load_recipe_dataset(ctx: "WorkContext", ref: "str | Dataset", *, param: str = "dataset") -> Dataset:
    """A registered dataset by name (all splits), or a Dataset given directly by a caller."""
    if isinstance(ref, Dataset):
        return ref
    if not ref:
        raise RecipeError(f"this recipe needs a registered dataset: pass --param {param}=NAME")
    return ctx.dataset(ref, None)


def check_dataset_for_task(dataset: Dataset, task: str, *, need_labels: bool = False) -> None:
    want = modality(task)
    have = "image" if dataset.images is not None else "text" if dataset.texts is not None else "empty"
    if have != want:
        raise RecipeError(f"dataset '{dataset.name}' holds {have} rows but a {task} model needs {want}")
    if len(dataset) == 0:
        raise RecipeError(f"dataset '{dataset.name}' has no rows")
    if need_labels and not dataset.has_labels:
        raise RecipeError(f"dataset '{dataset.name}' has no labels, and this recipe trains on labels")


def train_val_split(dataset: Dataset, val_fraction: float, seed: int) -> tuple[Dataset, Dataset | None]:
    """The dataset's own train/validation splits when it has them, else a seeded hold-out."""
    if dataset.split is not None:
        train = dataset.subset("train")
        val = dataset.subset("validation")
        if len(train) and len(val):
            return train, val
        if len(train):
            dataset = train
    if val_fraction <= 0 or len(dataset) < 4:
        return dataset, None
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(dataset))
    n_val = max(1, int(round(len(dataset) * val_fraction)))
    return dataset.take(np.sort(order[n_val:])), dataset.take(np.sort(order[:n_val]))


def model_label_names(model: nn.Module) -> list[str]:
    id2label = getattr(model.config, "id2label", None) or {}
    return [str(id2label[k]) for k in sorted(id2label, key=int)]


def align_to_model(dataset: Dataset, labels: list[str]) -> Dataset:
    """Label indices renumbered to the model's order (both name the same classes)."""
    if dataset.labels is None:
        return dataset
    from relman.data.labels import align_labels

    return align_labels(dataset, labels)


# -- batching ---------------------------------------------------------------------------------
@dataclass
class Batcher:
    """Turns rows of a Dataset into model inputs (tokenised text or processed pixels)."""

    task: str
    preprocessor: Any
    max_length: int = 128
    _pixels: list[tuple[np.ndarray, torch.Tensor]] | None = None

    @classmethod
    def for_model(cls, folder: "Path", task: str, max_length: int = 128) -> "Batcher":
        return cls(task=task, preprocessor=load_preprocessor(folder, task), max_length=max_length)

    def inputs(self, dataset: Dataset, index: np.ndarray, device: str) -> dict[str, torch.Tensor]:
        if modality(self.task) == "image":
            return {"pixel_values": self._all_pixels(dataset)[torch.as_tensor(index)].to(device)}
        texts = [dataset.texts[i] for i in index]  # type: ignore[index]
        enc = self.preprocessor(texts, padding=True, truncation=True, max_length=self.max_length,
                                return_tensors="pt")
        return {k: v.to(device) for k, v in enc.items()}

    def _all_pixels(self, dataset: Dataset) -> torch.Tensor:
        """Images are processed once per dataset (the processor is slow per call)."""
        if self._pixels is None:
            self._pixels = []
        for array, pixels in self._pixels:  # identity, not equality: the same rows object
            if array is dataset.images:
                return pixels
        images = list(dataset.images)  # type: ignore[arg-type]
        chunks = [self.preprocessor(images=images[i:i + 256], return_tensors="pt")["pixel_values"]
                  for i in range(0, len(images), 256)]
        self._pixels.append((dataset.images, torch.cat(chunks)))  # type: ignore[arg-type]
        return self._pixels[-1][1]


def batches(n: int, batch_size: int, *, shuffle: bool, rng: np.random.Generator | None = None) -> Iterator[np.ndarray]:
    order = rng.permutation(n) if shuffle and rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


def labels_tensor(dataset: Dataset, index: np.ndarray, device: str) -> torch.Tensor:
    return torch.as_tensor(dataset.labels[index], dtype=torch.long, device=device)  # type: ignore[index]


# -- optimisation -----------------------------------------------------------------------------
def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.01) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases and norms (the usual transformer recipe)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


class EarlyStopping:
    """Stops after `patience` evaluations without improvement and remembers the best state."""

    def __init__(self, patience: int, mode: str = "min") -> None:
        self.patience = patience
        self.mode = mode
        self.best: float | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_step = -1
        self.bad = 0

    def improved(self, value: float) -> bool:
        if self.best is None:
            return True
        return value < self.best if self.mode == "min" else value > self.best

    def update(self, value: float, model: nn.Module, step: int) -> bool:
        """Record `value`; True when training should stop."""
        if self.improved(value):
            self.best, self.best_step, self.bad = value, step, 0
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            return False
        self.bad += 1
        return self.bad >= self.patience

    def restore(self, model: nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


def set_seed(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


# -- adversarial training ---------------------------------------------------------------------
def fgsm_loss(model: nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Classification loss on an FGSM perturbation of the inputs: pixels for images, token
    embeddings for text (token ids are discrete, their embeddings are not). The perturbation
    is x + ε·sign(∇x loss), computed on a detached copy so the clean step is unaffected."""
    loss_fn = nn.CrossEntropyLoss()
    if "pixel_values" in inputs:
        x = inputs["pixel_values"].detach().clone().requires_grad_(True)
        rest = {k: v for k, v in inputs.items() if k != "pixel_values"}
        grad = torch.autograd.grad(loss_fn(model(pixel_values=x, **rest).logits, labels), x)[0]
        return loss_fn(model(pixel_values=(x + epsilon * grad.sign()).detach(), **rest).logits, labels)
    emb = model.get_input_embeddings()(inputs["input_ids"]).detach().clone().requires_grad_(True)
    rest = {k: v for k, v in inputs.items() if k != "input_ids"}
    grad = torch.autograd.grad(loss_fn(model(inputs_embeds=emb, **rest).logits, labels), emb)[0]
    return loss_fn(model(inputs_embeds=(emb + epsilon * grad.sign()).detach(), **rest).logits, labels)


# -- evaluation -------------------------------------------------------------------------------
@torch.no_grad()
def accuracy_and_loss(model: nn.Module, batcher: Batcher, dataset: Dataset, device: str,
                      batch_size: int = 64) -> tuple[float, float]:
    was_training = model.training
    model.eval()
    correct, total_loss, n = 0, 0.0, 0
    for idx in batches(len(dataset), batch_size, shuffle=False):
        logits = model(**batcher.inputs(dataset, idx, device)).logits
        y = labels_tensor(dataset, idx, device)
        total_loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
        n += len(idx)
    model.train(was_training)
    return correct / max(1, n), total_loss / max(1, n)


def with_labels(dataset: Dataset, labels: np.ndarray, names: list[str]) -> Dataset:
    return replace(dataset, labels=labels, label_names=names)


def resolve_device(ctx: "WorkContext") -> str:
    """The job's device, falling back to CPU when CUDA was asked for but is not there."""
    device = ctx.device or "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        ctx.log("device %s requested but CUDA is not available; training on CPU", device)
        return "cpu"
    return device


# -- did it learn? ----------------------------------------------------------------------------
class LossCurve:
    """The training losses of a run, to compare its first epoch with its last."""

    def __init__(self, steps_per_epoch: int) -> None:
        self.per_epoch = max(1, steps_per_epoch)
        self.losses: list[float] = []

    def add(self, loss: float) -> None:
        self.losses.append(loss)

    def relative_drop(self) -> float | None:
        """1 - mean(last epoch's losses) / mean(first epoch's); None before two epochs' worth."""
        k = min(self.per_epoch, len(self.losses) // 2)
        if k < 1:
            return None
        first = float(np.mean(self.losses[:k]))
        last = float(np.mean(self.losses[-k:]))
        return 1.0 - last / first if first > 0 else 0.0


@dataclass
class Convergence:
    """Whether a training run learned: validation accuracy above chance (when there is a
    validation split), else a training loss that fell. `reason` says why not, in one line."""

    converged: bool
    reason: str
    val_accuracy: float | None
    chance_accuracy: float | None
    chance_margin: float | None
    loss_drop: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"converged": self.converged, "reason": self.reason, "val_accuracy": self.val_accuracy,
                "chance_accuracy": self.chance_accuracy, "chance_margin": self.chance_margin,
                "train_loss_drop": self.loss_drop,
                "rule": "validation accuracy above the majority-class share by more than 2 binomial standard "
                        "errors (no validation split: the last epoch's training loss >= 5 % below the first's)"}


MIN_LOSS_DROP = 0.05


def convergence(curve: LossCurve, val_accuracy: float | None, val_labels: np.ndarray | None) -> Convergence:
    """Judge a classifier's training run (see Convergence). Chance is the majority class's share
    of the validation rows — what a model that ignores its input scores — and the margin two
    standard errors of an accuracy measured on that many rows, so a small split does not pass
    by luck."""
    drop = curve.relative_drop()
    flat = drop is not None and drop < MIN_LOSS_DROP
    drop_txt = f"training loss fell {100 * drop:.1f} %" if drop is not None else "training loss not measured"
    if val_accuracy is not None and val_labels is not None and len(val_labels):
        counts = np.bincount(np.asarray(val_labels, dtype=np.int64))
        chance = float(counts.max() / counts.sum())
        margin = 2.0 * math.sqrt(max(chance * (1 - chance), 1e-12) / len(val_labels))
        if val_accuracy <= chance + margin:
            return Convergence(False, f"validation accuracy {val_accuracy:.3f} is at chance ({chance:.3f} + "
                               f"{margin:.3f} for {len(val_labels)} rows); {drop_txt}", val_accuracy, chance, margin,
                               drop)
        return Convergence(True, "", val_accuracy, chance, margin, drop)
    if flat:
        return Convergence(False, f"no validation split and the {drop_txt} (under {100 * MIN_LOSS_DROP:.0f} %)",
                           None, None, None, drop)
    return Convergence(True, "", None, None, None, drop)
