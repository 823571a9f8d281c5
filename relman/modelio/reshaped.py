"""The "hf-reshaped" format's reader: a Hugging Face folder whose config.json lists reshaped
layers under `relman_surgery` (see relman.compress.surgery, which writes it).

The reader lives with the format, not the recipe, so loading a version never imports a recipe:
`relman.modelio.loading` names this module for the format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from relman.errors import ModelImportError
from relman.modelio.loading import TORCH_LOADERS, auto_class

RESHAPED = "hf-reshaped"
SURGERY_KEY = "relman_surgery"


def get_module(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path)


def set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, module)


def lowrank_module(in_features: int, rank: int, out_features: int, bias: bool) -> nn.Sequential:
    """x -> B(A x): A is (rank x in), B is (out x rank) and keeps the original bias."""
    return nn.Sequential(nn.Linear(in_features, rank, bias=False), nn.Linear(rank, out_features, bias=bias))


def apply_surgery(model: nn.Module, surgery: dict[str, Any]) -> None:
    """Reshape `model`'s layers as `surgery` lists (weights are loaded afterwards)."""
    for path, (fin, fout, bias) in (surgery.get("linear") or {}).items():
        set_module(model, path, nn.Linear(int(fin), int(fout), bias=bool(bias)))
    for path, (fin, rank, fout, bias) in (surgery.get("lowrank") or {}).items():
        set_module(model, path, lowrank_module(int(fin), int(rank), int(fout), bool(bias)))
    for path, attrs in (surgery.get("attrs") or {}).items():
        module = model.get_submodule(path)
        for name, value in attrs.items():
            setattr(module, name, value)


# -- loading ----------------------------------------------------------------------------------
def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    """Load `state` into `model`; every tensor must fit and every parameter must be given,
    except parameters tied to one that was given (e.g. GPT-2's lm_head)."""
    own = model.state_dict()
    for key, tensor in state.items():
        if key in own and tuple(own[key].shape) != tuple(tensor.shape):
            raise ModelImportError(f"{where}: tensor '{key}' has shape {tuple(tensor.shape)} but the reshaped "
                                   f"model expects {tuple(own[key].shape)}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ModelImportError(f"{where}: tensor '{unexpected[0]}' does not belong to this model "
                               f"({len(unexpected)} unexpected)")
    if missing:
        if hasattr(model, "tie_weights"):
            model.tie_weights()
        loaded = {t.data_ptr() for k, t in model.state_dict().items() if k in state}
        untied = [k for k in missing if model.state_dict()[k].data_ptr() not in loaded]
        if untied:
            raise ModelImportError(f"{where}: weights for '{untied[0]}' are missing ({len(untied)} missing)")


def read_safetensors_folder(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise ModelImportError(f"{folder} holds no .safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def load_reshaped(folder: Path, task: str, device: str = "cpu") -> nn.Module:
    """Loader of the "hf-reshaped" format (registered in relman.modelio TORCH_LOADERS)."""
    from transformers import AutoConfig

    folder = Path(folder)
    config = AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    surgery = getattr(config, SURGERY_KEY, None) or {}
    model = auto_class(task).from_config(config)
    apply_surgery(model, surgery)
    load_state_strict(model, read_safetensors_folder(folder), folder)
    return model.to(device).eval()


TORCH_LOADERS.setdefault(RESHAPED, load_reshaped)
