"""LoRA with the `peft` library: wrap a model for training, save what it adds as a `peft-adapter`.

Target modules are matched the way PEFT matches them (a layer name equal to, or ending in
".<name>"), but checked here first, so a typo is refused with the layers that exist before any
data is read or any step is taken. The trainable set is the LoRA matrices plus
`modules_to_save`: the classification head when it is new, and any layer the base did not
provide (e.g. a pooler absent from a sentence-embedding checkpoint), so the stored adapter
always determines the composed model completely.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from relman.errors import RecipeError
from relman.modelio import peft_adapter

_ADAPTABLE = ("Linear", "Conv1D", "Conv2d", "Embedding")


def layer_names(model: nn.Module) -> list[str]:
    """Short names of the layers LoRA can wrap (the last part of each module path)."""
    return sorted({name.rpartition(".")[2] for name, m in model.named_modules()
                   if name and type(m).__name__ in _ADAPTABLE})


# attention query/value projections under the names architectures use (the usual LoRA targets)
_COMMON_TARGETS = (("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"), ("c_attn",), ("qkv",))


def default_targets(model: nn.Module) -> list[str]:
    """PEFT's default targets for the architecture when they exist in this model, else the first
    common query/value naming the model has (transformers 5 renamed some, e.g. ViT's q_proj)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as MAPPING

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    candidates = ([tuple(MAPPING[model_type])] if model_type in MAPPING else []) + list(_COMMON_TARGETS)
    for targets in candidates:
        if all(matching_modules(model, targets).values()):
            return list(targets)
    raise RecipeError(f"no default LoRA target modules for model type '{model_type}'; pass "
                      f"--param target_modules=... (layers: {', '.join(layer_names(model))})")


def linear_targets(model: nn.Module) -> list[str]:
    """Every Linear layer's short name except the output layer (PEFT's "all-linear"): the
    default for causal LMs, where new knowledge lives in the MLPs as much as in attention and
    query/value adapters alone learn a new answer too slowly to be a usable default."""
    out_layer = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return sorted({name.rpartition(".")[2] for name, m in model.named_modules()
                   if name and isinstance(m, nn.Linear) and m is not out_layer})


def matching_modules(model: nn.Module, targets: Sequence[str]) -> dict[str, list[str]]:
    """target -> the module paths it selects (PEFT's rule: exact name or '.'-suffix)."""
    out: dict[str, list[str]] = {t: [] for t in targets}
    for name, module in model.named_modules():
        if not name or type(module).__name__ not in _ADAPTABLE:
            continue
        for t in targets:
            if name == t or name.endswith("." + t):
                out[t].append(name)
    return out


def check_targets(model: nn.Module, targets: Sequence[str], ref: str, *, default: Sequence[str] = ()) -> list[str]:
    """The targets, each checked to select at least one adaptable layer (else refused); none given:
    `default`, else PEFT's default for the architecture."""
    targets = [t.strip() for t in targets if t.strip()] or list(default) or default_targets(model)
    found = matching_modules(model, targets)
    empty = [t for t, names in found.items() if not names]
    if empty:
        raise RecipeError(f"LoRA target_modules {', '.join(repr(t) for t in empty)} match no layer of {ref}; "
                          f"its adaptable layers are named: {', '.join(layer_names(model))}")
    return targets


def wrap(model: nn.Module, *, r: int, alpha: float, dropout: float, targets: Sequence[str],
         modules_to_save: Sequence[str]) -> Any:
    """The PEFT model around `model` (its base weights frozen, the LoRA layers in place)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                        modules_to_save=list(modules_to_save) or None, bias="none")
    return get_peft_model(model, config)


def fresh_modules(missing_keys: Sequence[str], model: nn.Module) -> list[str]:
    """Module paths of parameters the base checkpoint did not provide (freshly initialised)."""
    params = dict(model.named_parameters())
    out = []
    for key in missing_keys:
        if key in params:
            out.append(key.rpartition(".")[0])
    return sorted(set(out))


def save_adapter(peft_model: Any, out: Path, pin: dict[str, Any]) -> None:
    """adapter_model.safetensors + adapter_config.json (naming the base) + relman_adapter.json."""
    peft_model.save_pretrained(str(out), safe_serialization=True)
    readme = out / "README.md"  # PEFT writes a stub card; relman generates its own
    if readme.is_file():
        readme.unlink()
    cfg_path = out / peft_adapter.PEFT_CONFIG
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = pin["base_ref"]
    cfg["revision"] = pin["base_manifest_sha256"]
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True), encoding="utf-8")
    (out / peft_adapter.PIN).write_text(json.dumps(pin, indent=2, sort_keys=True), encoding="utf-8")
    for extra in out.iterdir():  # only the adapter's own files are stored
        if extra.name not in peft_adapter.FILES:
            shutil.rmtree(extra) if extra.is_dir() else extra.unlink()
    peft_adapter.check_adapter_folder(out)


def make_pin(version: Any, task: str, base_task: str, overrides: dict[str, Any], r: int, alpha: float,
             targets: Sequence[str], modules_to_save: Sequence[str]) -> dict[str, Any]:
    return {"base_version_id": version.id, "base_ref": version.ref, "base_manifest_sha256": version.manifest_sha256,
            "base_format": version.format, "base_task": base_task, "task": task, "config_overrides": overrides,
            "r": r, "lora_alpha": alpha, "target_modules": list(targets), "modules_to_save": list(modules_to_save)}
