"""relman's torch-int8 writer as it was before torchao (torch.ao `quantize_dynamic`, the state
dict pickled with its qint8 tensors in `quantized_state_dict.pt`), kept here so tests can build
a catalog holding an old-format version and check that today's code still reads it."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from relman.compress.export.onnx_export import copy_side_files
from relman.modelio.loading import load_torch_model


def quantize_like_before(model: torch.nn.Module, keep_float: list[str]) -> tuple[torch.nn.Module, list[str]]:
    """The old recipe's quantisation: every Linear but `keep_float`, torch.ao dynamic qint8."""
    targets = sorted(name for name, m in model.named_modules()
                     if isinstance(m, torch.nn.Linear) and not any(k and k in name for k in keep_float))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(
            model, {name: torch.ao.quantization.default_dynamic_qconfig for name in targets}, dtype=torch.qint8)
    return quantized, targets


def write_legacy_int8(parent: Path, task: str, out: Path, keep_float: list[str]) -> torch.nn.Module:
    """The old layout in `out` (side files, quantized_state_dict.pt, relman_int8.json without a
    "layout" key); returns the quantised model it was written from."""
    model = load_torch_model(parent, task, "cpu").float().eval()
    quantized, targets = quantize_like_before(model, keep_float)
    out.mkdir(parents=True)
    copy_side_files(parent, out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(quantized.state_dict(), str(out / "quantized_state_dict.pt"))
    (out / "relman_int8.json").write_text(json.dumps({"quantized": targets, "dtype": "qint8",
                                                      "torch": torch.__version__}, indent=2), encoding="utf-8")
    return quantized
