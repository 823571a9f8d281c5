"""Shared plumbing of the weight-editing recipes: load a parent, save a child, and the
"hf-reshaped" format for models whose layer shapes no Hugging Face config can express.

Why a format of our own: transformers 5 no longer has `prune_heads`, and a BERT's head size
is derived from `hidden_size / num_attention_heads`, so a model with heads removed, or with a
Linear layer split into two low-rank factors, cannot be rebuilt from its config alone. We
keep the ordinary Hugging Face folder (config.json + safetensors + tokenizer) and add one
key to config.json, `relman_surgery`, listing the reshaped layers:

    {"linear":  {"encoder.layer.0.attention.self.query": [in, out, bias]},
     "lowrank": {"encoder.layer.0.intermediate.dense": [in, rank, out, bias]},
     "attrs":   {"encoder.layer.0.attention.self": {"num_attention_heads": 3, ...}}}

`load_reshaped` builds the model from the config, applies that list, then loads the weights
strictly (every tensor must fit), so nothing is silently re-initialised. The weights are
saved under the model's in-memory tensor names (safetensors `save_model`, shared tensors
stored once), not save_pretrained's checkpoint names, so loading needs no key conversion. Recipes compose:
loading a reshaped parent and reshaping it further merges the lists.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from relman.errors import RecipeError
from relman.modelio.loading import load_torch_model
# the format's reader lives with the format (modelio); recipes keep importing these names from here
from relman.modelio.reshaped import (  # noqa: F401
    RESHAPED, SURGERY_KEY, apply_surgery, get_module, load_reshaped, load_state_strict, lowrank_module,
    read_safetensors_folder, set_module,
)

if TYPE_CHECKING:
    from relman.compress.registry import ModelSource
    from relman.context import WorkContext

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".onnx_data", ".index.json")
# Files save_pretrained writes itself; everything else in a parent folder (tokenizer, image
# processor, vocab ...) is copied into the child unchanged.
_WRITTEN_BY_SAVE = ("config.json", "generation_config.json")


# -- modules ----------------------------------------------------------------------------------
def is_linear_like(module: nn.Module) -> bool:
    """nn.Linear, or transformers' Conv1D (GPT-2), whose weight is stored transposed."""
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def linear_weight(module: nn.Module) -> torch.Tensor:
    """The weight as (out_features, in_features), whatever the layer type."""
    if isinstance(module, nn.Linear):
        return module.weight
    return module.weight.t()  # Conv1D stores (in, out)


def merge_surgery(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = copy.deepcopy(old or {})
    for section in ("linear", "lowrank", "attrs"):
        entries = dict(out.get(section) or {})
        for path, value in (new.get(section) or {}).items():
            if section == "attrs":
                entries[path] = {**entries.get(path, {}), **value}
            else:
                entries[path] = value
        if section == "lowrank":  # a factorised layer is no longer a plain reshaped Linear
            out["linear"] = {k: v for k, v in (out.get("linear") or {}).items() if k not in entries}
        if entries:
            out[section] = entries
    return {k: v for k, v in out.items() if v}


def current_surgery(model: nn.Module) -> dict[str, Any]:
    return copy.deepcopy(getattr(model.config, SURGERY_KEY, None) or {})


def load_parent(source: "ModelSource", device: str = "cpu") -> nn.Module:
    """The parent version as a float32 torch model on `device`, whatever torch format it has."""
    task = source.task
    if task is None:
        raise RecipeError(f"{source.version.ref} has no task, so it cannot be loaded for this recipe; "
                          "set one when importing it")
    return load_torch_model(source.folder, task, device, fmt=source.format)


# -- saving -----------------------------------------------------------------------------------
def new_output_folder(ctx: "WorkContext", name: str) -> Path:
    """A fresh folder under the job's workdir (removed with it when the job fails)."""
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=ctx.workdir))


def unique_param_count(model: nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel()
    return total


def copy_preprocessing(parent_folder: Path, out: Path) -> None:
    """Tokenizer / image processor files of the parent, so the child runs on the same inputs."""
    for f in sorted(Path(parent_folder).iterdir()):
        if not f.is_file() or f.name in _WRITTEN_BY_SAVE or f.name.endswith(WEIGHT_SUFFIXES):
            continue
        if not (out / f.name).exists():
            shutil.copyfile(f, out / f.name)


def save_child(model: nn.Module, parent_folder: Path, out: Path, surgery: dict[str, Any] | None = None) -> str:
    """Write `model` as a Hugging Face folder (safetensors) plus the parent's preprocessing
    files; returns the format: "hf", or "hf-reshaped" when layers were reshaped."""
    model = model.to("cpu").eval()
    surgery = surgery or {}
    if surgery:
        setattr(model.config, SURGERY_KEY, surgery)
    elif hasattr(model.config, SURGERY_KEY):
        delattr(model.config, SURGERY_KEY)
    for p in model.parameters():
        if not p.is_contiguous():
            p.data = p.data.contiguous()
    out.mkdir(parents=True, exist_ok=True)
    if surgery:
        # The tensors keep the in-memory module names: save_pretrained would rename some to a
        # legacy checkpoint layout (e.g. ViT's attention.attention.key) that only
        # from_pretrained maps back, and from_pretrained cannot build this model anyway.
        from safetensors.torch import save_model

        model.config.save_pretrained(str(out))
        save_model(model, str(out / "model.safetensors"), metadata={"format": "pt"})
    else:
        model.save_pretrained(str(out), safe_serialization=True)
    copy_preprocessing(parent_folder, out)
    return RESHAPED if surgery else "hf"
