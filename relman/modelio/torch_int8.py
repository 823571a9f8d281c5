"""The "torch-int8" format's reader (written by relman.compress.quantize.quant_torch).

The parent's Hugging Face folder without weights plus `quantized_state_dict.pt` and
`relman_int8.json` (the quantised layer list): the reader rebuilds the FP32 architecture from
config.json, re-applies the same dynamic quantisation and loads the tensors with
`torch.load(weights_only=True)`, strictly. It lives with the format so loading a version never
imports a recipe.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Iterable

import torch

from relman.errors import ModelImportError
from relman.modelio.loading import TORCH_LOADERS, auto_class

FORMAT = "torch-int8"
STATE_FILE = "quantized_state_dict.pt"
SPEC_FILE = "relman_int8.json"


def quantize_dynamic_layers(model: torch.nn.Module, layers: Iterable[str]) -> torch.nn.Module:
    """torch.ao's dynamic INT8 of the named Linear layers (its deprecation warning silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized: torch.nn.Module = torch.ao.quantization.quantize_dynamic(
            model, {name: torch.ao.quantization.default_dynamic_qconfig for name in layers}, dtype=torch.qint8)
    return quantized


def load_int8(folder: Path, task: str, device: str = "cpu") -> torch.nn.Module:
    """Loader for format "torch-int8" (registered in TORCH_LOADERS). CPU only: PyTorch's
    dynamic INT8 kernels exist for CPU (fbgemm / qnnpack) and not for CUDA."""
    folder = Path(folder)
    spec_path = folder / SPEC_FILE
    if not spec_path.is_file() or not (folder / STATE_FILE).is_file():
        raise ModelImportError(f"{folder}: not a torch-int8 model ({SPEC_FILE} or {STATE_FILE} missing)")
    if device != "cpu":
        raise ModelImportError(f"{folder}: dynamic INT8 PyTorch models run on the CPU only (asked for {device})")
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    config_cls = auto_class(task)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    model = config_cls.from_config(config).eval()
    quantized = quantize_dynamic_layers(model, spec["quantized"])
    state = torch.load(str(folder / STATE_FILE), map_location="cpu", weights_only=True)
    quantized.load_state_dict(state, strict=True)
    return quantized.eval()


TORCH_LOADERS[FORMAT] = load_int8
