"""The "torch-int8" format: its writer's helpers and its reader (the recipe is
relman.compress.quantize.quant_torch; the reader lives with the format so loading a version
never imports a recipe).

Layout (relman_int8.json `"layout": "int8-rowwise-v1"`, written since torchao replaced
torch.ao's eager quantisation): the parent's Hugging Face folder without weights, plus
`int8_weights.safetensors` holding plain tensors only: for each quantised Linear
`<name>.weight.qdata` (int8, out x in) and `<name>.weight.scale` (float32, out x 1, symmetric,
zero point 0), and every other parameter / buffer as it was. No pickle, no quantised tensor
type: any safetensors reader can open it. The reader rebuilds the FP32 architecture from
config.json, loads the float tensors strictly and wraps each int8 weight + scale in torchao's
`Int8Tensor` (the type torchao's `Int8DynamicActivationInt8WeightConfig` /
`Int8WeightOnlyConfig` produce), so the model runs torchao's int8 Linear.

Legacy layout (no "layout" key; `quantized_state_dict.pt`, torch.ao `quantize_dynamic`, written
by relman before this change): still read, exactly as before (same kernels, so a stored
version's evaluations reproduce), by `_load_legacy`. It rests on torch.ao eager quantisation
and qint8 tensors, which torch 2.13 deprecates; relman keeps it for torch 2.x (see
docs/ARCHITECTURE.md, "torch-int8 on torchao").
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch

from relman.errors import ModelImportError
from relman.modelio.loading import TORCH_LOADERS, auto_class

FORMAT = "torch-int8"
SPEC_FILE = "relman_int8.json"
WEIGHTS_FILE = "int8_weights.safetensors"
LAYOUT = "int8-rowwise-v1"
# activations of a quantised Linear: "dynamic" = int8 per token, computed at run time
# (torchao Int8DynamicActivationInt8WeightConfig); "float" = weight-only (Int8WeightOnlyConfig)
ACTIVATIONS = ("dynamic", "float")
LEGACY_STATE_FILE = "quantized_state_dict.pt"
STATE_FILE = LEGACY_STATE_FILE  # the name older code imported


class _QuietImport(logging.Filter):
    """Drops two log lines torchao 0.18's import writes on a CPU torch 2.13, neither about
    relman's use: its CUDA-only kernel libraries (mxfp8, cutlass sm90a) failing to load, and
    torch's notice that torchao registers Enum classes with pytree (torchao's call, deprecated
    by torch). Listed in docs/ARCHITECTURE.md."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ("Failed to load" in msg or "register_constant() on Enum" in msg)


def torchao_quantization() -> Any:
    """`torchao.quantization`, imported with its import-time noise filtered (see _QuietImport)."""
    import sys

    if "torchao.quantization" in sys.modules:
        return sys.modules["torchao.quantization"]
    quiet = _QuietImport()
    loggers = [logging.getLogger("torchao"), logging.getLogger("torch.utils._pytree")]
    for lg in loggers:
        lg.addFilter(quiet)
    try:
        import torchao.quantization
    finally:
        for lg in loggers:
            lg.removeFilter(quiet)
    return torchao.quantization


def _config(activations: str) -> Any:
    tq = torchao_quantization()
    if activations == "dynamic":
        return tq.Int8DynamicActivationInt8WeightConfig(granularity=tq.PerRow(), set_inductor_config=False)
    if activations == "float":
        return tq.Int8WeightOnlyConfig(granularity=tq.PerRow(), set_inductor_config=False)
    raise ModelImportError(f"unknown int8 activations '{activations}' (known: {', '.join(ACTIVATIONS)})")


def quantize_linears(model: torch.nn.Module, layers: Iterable[str], activations: str = "dynamic") -> torch.nn.Module:
    """torchao's int8 config applied, in place, to the named Linear layers (per-row symmetric
    weights; activations per `activations`)."""
    wanted = set(layers)
    torchao_quantization().quantize_(model, _config(activations),
                                     filter_fn=lambda m, name: isinstance(m, torch.nn.Linear) and name in wanted)
    return model


def plain_tensors(model: torch.nn.Module, layers: Iterable[str]) -> dict[str, torch.Tensor]:
    """The state dict as plain tensors for safetensors: each quantised weight split into its
    int8 data and float32 scale; a tensor sharing memory with an earlier one (tied weights)
    is copied, since safetensors stores no aliases."""
    from torchao.quantization.quantize_.workflows.int8.int8_tensor import Int8Tensor

    names = {f"{layer}.weight" for layer in layers}
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in model.state_dict().items():
        if key in names:
            if not isinstance(value, Int8Tensor) or value.zero_point is not None and bool(value.zero_point.any()):
                raise ModelImportError(f"{key} is not a symmetric torchao int8 weight ({type(value).__name__})")
            out[key + ".qdata"] = value.qdata.detach().contiguous()
            out[key + ".scale"] = value.scale.detach().to(torch.float32).contiguous()
            continue
        tensor = value.detach().contiguous()
        if tensor.data_ptr() in seen:
            tensor = tensor.clone()
        seen.add(tensor.data_ptr())
        out[key] = tensor
    return out


def write_spec(folder: Path, layers: list[str], activations: str) -> None:
    import torchao

    (Path(folder) / SPEC_FILE).write_text(json.dumps({
        "layout": LAYOUT, "quantized": sorted(layers), "activations": activations, "weights": "int8 per-row symmetric",
        "torch": torch.__version__, "torchao": torchao.__version__}, indent=2), encoding="utf-8")


def _int8_weight(qdata: torch.Tensor, scale: torch.Tensor, activations: str) -> torch.nn.Parameter:
    """torchao's Int8Tensor from stored data, as the config's own handler builds it."""
    tq = torchao_quantization()
    from torchao.quantization.quantize_.workflows.int8.int8_tensor import Int8Tensor, QuantizeTensorToInt8Kwargs

    act = QuantizeTensorToInt8Kwargs(granularity=tq.PerRow()) if activations == "dynamic" else None
    weight = Int8Tensor(qdata, scale, [1, int(qdata.shape[1])], torch.float32, act_quant_kwargs=act)
    return torch.nn.Parameter(weight, requires_grad=False)


def _fp32_model(folder: Path, task: str) -> torch.nn.Module:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    model: torch.nn.Module = auto_class(task).from_config(config).eval()
    return model


def _load_rowwise(folder: Path, task: str, spec: dict[str, Any]) -> torch.nn.Module:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    activations = spec.get("activations", "dynamic")
    layers = spec.get("quantized")
    if activations not in ACTIVATIONS or not isinstance(layers, list) or not all(isinstance(n, str) for n in layers):
        raise ModelImportError(f"{folder}: malformed {SPEC_FILE} (activations / quantized)")
    try:
        tensors = load_file(str(folder / WEIGHTS_FILE), device="cpu")
    except (SafetensorError, OSError) as e:
        raise ModelImportError(f"{folder}: cannot read {WEIGHTS_FILE}: {e}") from None
    model = _fp32_model(folder, task)
    modules = dict(model.named_modules())
    for name in layers:
        linear = modules.get(name)
        qdata, scale = tensors.pop(f"{name}.weight.qdata", None), tensors.pop(f"{name}.weight.scale", None)
        if not isinstance(linear, torch.nn.Linear) or qdata is None or scale is None:
            raise ModelImportError(f"{folder}: quantised layer '{name}' is not a Linear of this architecture "
                                   "or has no int8 weight / scale")
        out_f, in_f = linear.weight.shape
        if qdata.dtype != torch.int8 or tuple(qdata.shape) != (out_f, in_f) or tuple(scale.shape) != (out_f, 1):
            raise ModelImportError(f"{folder}: '{name}' int8 weight {tuple(qdata.shape)} {qdata.dtype} / scale "
                                   f"{tuple(scale.shape)} do not fit a {in_f}->{out_f} Linear")
        linear.weight = _int8_weight(qdata, scale.to(torch.float32), activations)
    expected = set(model.state_dict()) - {f"{n}.weight" for n in layers}
    if set(tensors) != expected:
        extra, missing = sorted(set(tensors) - expected), sorted(expected - set(tensors))
        raise ModelImportError(f"{folder}: {WEIGHTS_FILE} does not match the architecture "
                               f"(unexpected {extra[:3]}, missing {missing[:3]})")
    model.load_state_dict(tensors, strict=False)
    return model.eval()


def _load_legacy(folder: Path, task: str, spec: dict[str, Any]) -> torch.nn.Module:
    """A torch.ao `quantize_dynamic` version (relman before torchao): re-applies the same
    quantisation to the FP32 architecture and loads the qint8 state dict with
    `torch.load(weights_only=True)`, strictly; torch.ao's deprecation warnings silenced here
    (this path is kept on purpose; the format it reads is documented as legacy)."""
    model = _fp32_model(folder, task)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized: torch.nn.Module = torch.ao.quantization.quantize_dynamic(
            model, {name: torch.ao.quantization.default_dynamic_qconfig for name in spec["quantized"]},
            dtype=torch.qint8)
        state = torch.load(str(folder / LEGACY_STATE_FILE), map_location="cpu", weights_only=True)
        quantized.load_state_dict(state, strict=True)
    return quantized.eval()


def is_legacy(folder: Path) -> bool:
    """A torch-int8 folder in the torch.ao layout (read by _load_legacy)."""
    return (Path(folder) / LEGACY_STATE_FILE).is_file() and not (Path(folder) / WEIGHTS_FILE).is_file()


def load_int8(folder: Path, task: str, device: str = "cpu") -> torch.nn.Module:
    """Loader for format "torch-int8" (registered in TORCH_LOADERS), either layout. CPU only:
    the legacy kernels (fbgemm / qnnpack) exist for CPU alone, and evaluation of both layouts
    runs where their figures were measured."""
    folder = Path(folder)
    spec_path = folder / SPEC_FILE
    if not spec_path.is_file() or not ((folder / WEIGHTS_FILE).is_file() or (folder / LEGACY_STATE_FILE).is_file()):
        raise ModelImportError(f"{folder}: not a torch-int8 model ({SPEC_FILE} or {WEIGHTS_FILE} missing)")
    if device != "cpu":
        raise ModelImportError(f"{folder}: torch-int8 models run on the CPU only (asked for {device})")
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise ModelImportError(f"{folder}: unreadable {SPEC_FILE}: {e}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("quantized"), list):
        raise ModelImportError(f"{folder}: malformed {SPEC_FILE} (no 'quantized' layer list)")
    if spec.get("layout") == LAYOUT and (folder / WEIGHTS_FILE).is_file():
        return _load_rowwise(folder, task, spec)
    if "layout" not in spec and is_legacy(folder):
        return _load_legacy(folder, task, spec)
    raise ModelImportError(f"{folder}: unknown torch-int8 layout '{spec.get('layout', 'legacy')}' "
                           f"(this relman reads '{LAYOUT}' and the legacy torch.ao layout)")


TORCH_LOADERS[FORMAT] = load_int8
