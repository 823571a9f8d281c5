"""Recognise and check a model on disk before anything is stored: format, files, task,
parameter count, dtype.

Safetensors headers are parsed by hand (no torch needed, and a truncated file is caught by
comparing the header's offsets with the file size). ONNX is parsed with `onnx` without
loading external data. Pickle-based torch files are opened only with
`torch.load(weights_only=True)`, which refuses any pickle that would import code. A config
that needs `trust_remote_code` is refused. Nothing here touches a network.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from dataclasses import dataclass, field
from math import prod
from pathlib import Path
from typing import Any

from relman.errors import ModelImportError, UnsafeModelError

SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
WEIGHT_SUFFIXES = (".safetensors", ".onnx") + PICKLE_SUFFIXES


@dataclass
class ModelDescription:
    """What `inspect_model` found; everything `import_model` records."""

    format: str  # hf | safetensors | onnx | torch
    files: dict[str, Path]  # path inside the version -> file on disk
    task: str | None = None
    architecture: str | None = None
    params: int | None = None
    dtype: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files.values())


# -- task guessing ----------------------------------------------------------------------------
def guess_task(config: dict[str, Any]) -> tuple[str | None, str | None]:
    """(task, architecture) from a config.json's `architectures` list (by the suffixes in the
    task table)."""
    archs = config.get("architectures") or []
    arch = archs[0] if archs else None
    if not arch:
        return None, None
    return guess_task_from_architecture(arch), arch


def guess_task_from_architecture(arch: str) -> str | None:
    """The task whose longest architecture suffix `arch` ends with ('GPT2LMHeadModel' is a
    causal LM, not a bare 'Model')."""
    from relman.modelio.loading import task_models

    best, best_len = None, 0
    for task, model in task_models().items():
        for suffix in model.architecture_suffixes:
            if arch.endswith(suffix) and len(suffix) > best_len:
                best, best_len = task, len(suffix)
    return best


# -- safetensors ------------------------------------------------------------------------------
def read_safetensors_header(path: Path) -> dict[str, Any]:
    """Parse and check a .safetensors header; raises on a truncated or corrupt file."""
    size = path.stat().st_size
    if size < 8:
        raise ModelImportError(f"{path}: not a safetensors file (only {size} bytes)")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > min(size - 8, 100 * 1024 * 1024):
            raise ModelImportError(f"{path}: corrupt safetensors header (declares {n} header bytes in a "
                                   f"{size}-byte file)")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelImportError(f"{path}: corrupt safetensors header (not valid JSON)") from None
    if not isinstance(header, dict):
        raise ModelImportError(f"{path}: corrupt safetensors header (not a JSON object)")
    end_max = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ModelImportError(f"{path}: corrupt safetensors header (entry '{name}' is malformed)") from None
        width = SAFETENSORS_DTYPE_BYTES.get(dtype)
        if width is None:
            raise ModelImportError(f"{path}: tensor '{name}' has unknown dtype {dtype}")
        if end - begin != prod(shape) * width:
            raise ModelImportError(f"{path}: tensor '{name}' has {end - begin} bytes for shape {shape} {dtype}")
        end_max = max(end_max, end)
    if 8 + n + end_max != size:
        what = "truncated" if 8 + n + end_max > size else "has trailing bytes"
        raise ModelImportError(f"{path}: safetensors file is {what} (header expects {8 + n + end_max} bytes, "
                               f"file has {size})")
    return header


def safetensors_stats(path: Path) -> tuple[int, Counter[str]]:
    header = read_safetensors_header(path)
    params = 0
    dtypes: Counter[str] = Counter()
    for name, info in header.items():
        if name == "__metadata__":
            continue
        n = prod(info["shape"])
        params += n
        dtypes[info["dtype"]] += n
    return params, dtypes


_ST_TO_TORCH = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64", "I8": "int8",
                "U8": "uint8", "I32": "int32", "I64": "int64", "BOOL": "bool"}


# -- torch pickles ----------------------------------------------------------------------------
def torch_state_dict_stats(path: Path) -> tuple[int, Counter[str]]:
    """Open a torch file with weights_only=True (refuses pickled code) and count tensors."""
    import pickle

    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported pickle"
        raise UnsafeModelError(f"{path}: refused, the pickle would run code or build objects other than "
                               f"tensors ({first[:160]})") from None
    except Exception as e:  # corrupt zip, truncated, not a torch file
        raise ModelImportError(f"{path}: not a readable torch weights file ({type(e).__name__}: "
                               f"{str(e).splitlines()[0][:160] if str(e) else 'unreadable'})") from None
    tensors: list[Any] = []

    def walk(o: Any) -> None:
        if isinstance(o, torch.Tensor):
            tensors.append(o)
        elif isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v)

    walk(obj)
    if not tensors:
        raise ModelImportError(f"{path}: holds no tensors (expected a state dict)")
    dtypes: Counter[str] = Counter()
    for t in tensors:
        dtypes[str(t.dtype).replace("torch.", "")] += t.numel()
    return sum(t.numel() for t in tensors), dtypes


# -- onnx -------------------------------------------------------------------------------------
def onnx_stats(path: Path) -> tuple[int, Counter[str], list[Path]]:
    """(params, dtypes, external data files) of an ONNX model, without loading the data."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ModelImportError(f"{path}: not a valid ONNX model ({type(e).__name__}: "
                               f"{str(e).splitlines()[0][:160] if str(e) else 'parse error'})") from None
    if not model.graph.node:
        raise ModelImportError(f"{path}: ONNX model has an empty graph")
    externals: list[Path] = []
    params = 0
    dtypes: Counter[str] = Counter()
    for init in model.graph.initializer:
        n = prod(init.dims) if init.dims else 1
        params += n
        dtypes[onnx.TensorProto.DataType.Name(init.data_type).lower()] += n
        if init.data_location == onnx.TensorProto.EXTERNAL:
            loc = {e.key: e.value for e in init.external_data}.get("location")
            if not loc:
                raise ModelImportError(f"{path}: initializer '{init.name}' has external data with no location")
            target = (path.parent / loc).resolve()
            if not target.is_relative_to(path.parent.resolve()):
                raise UnsafeModelError(f"{path}: external data '{loc}' points outside the model's folder")
            if not target.is_file():
                raise ModelImportError(f"{path}: external data file '{loc}' is missing")
            if target not in externals:
                externals.append(target)
    return params, dtypes, externals


# -- the entry point --------------------------------------------------------------------------
def _main_dtype(dtypes: Counter[str]) -> str | None:
    if not dtypes:
        return None
    name = dtypes.most_common(1)[0][0]
    return _ST_TO_TORCH.get(name, name)


def _check_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelImportError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ModelImportError(f"{path}: expected a JSON object")
    if config.get("auto_map") or config.get("trust_remote_code"):
        raise UnsafeModelError(f"{path}: this model needs trust_remote_code (its config has 'auto_map'); "
                               "relman never runs code shipped with a model")
    return config


def _folder_files(folder: Path) -> dict[str, Path]:
    files = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        if p.is_symlink():
            target = p.resolve()
            if not target.is_relative_to(folder.resolve()):
                raise UnsafeModelError(f"{p}: symbolic link points outside the model folder")
        if p.is_file() and p.suffix != ".py":
            files[rel.as_posix()] = p
    return files


def inspect_model(path: Path | str) -> ModelDescription:
    """Describe the model at `path`, or raise a one-line error naming the file and problem."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelImportError(f"{path}: no such file or folder")
    if path.is_dir():
        return _inspect_folder(path)
    return _inspect_file(path)


def _inspect_file(path: Path) -> ModelDescription:
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise ModelImportError(f"{path}: file is empty")
    if suffix == ".safetensors":
        params, dtypes = safetensors_stats(path)
        return ModelDescription("safetensors", {path.name: path}, params=params, dtype=_main_dtype(dtypes))
    if suffix == ".onnx":
        params, dtypes, externals = onnx_stats(path)
        files = {path.name: path}
        files.update({e.relative_to(path.parent.resolve()).as_posix(): e for e in externals})
        return ModelDescription("onnx", files, params=params, dtype=_main_dtype(dtypes))
    if suffix in PICKLE_SUFFIXES:
        params, dtypes = torch_state_dict_stats(path)
        return ModelDescription("torch", {path.name: path}, params=params, dtype=_main_dtype(dtypes))
    raise ModelImportError(f"{path}: unsupported file type '{suffix or path.name}' (expected a Hugging Face "
                           "folder, .safetensors, .onnx, or a torch state dict .bin/.pt/.pth)")


def _inspect_folder(folder: Path) -> ModelDescription:
    files = _folder_files(folder)
    if not files:
        raise ModelImportError(f"{folder}: folder is empty")
    config: dict[str, Any] = {}
    if "config.json" in files:
        config = _check_config(files["config.json"])
    weights = [rel for rel in files if rel.lower().endswith(WEIGHT_SUFFIXES)]
    if not weights:
        raise ModelImportError(f"{folder}: no weights found (expected *.safetensors, pytorch_model.bin or *.onnx)")
    onnx_files = [rel for rel in weights if rel.lower().endswith(".onnx")]
    params = 0
    dtypes: Counter[str] = Counter()
    if onnx_files:
        fmt = "onnx"
        for rel in onnx_files:
            p, d, _ = onnx_stats(files[rel])
            params += p
            dtypes.update(d)
    else:
        fmt = "hf" if config else "safetensors"
        st = [rel for rel in weights if rel.lower().endswith(".safetensors")]
        for rel in st or weights:
            p, d = safetensors_stats(files[rel]) if rel.lower().endswith(".safetensors") \
                else torch_state_dict_stats(files[rel])
            params += p
            dtypes.update(d)
        if not config:
            if len(weights) != 1:
                raise ModelImportError(f"{folder}: several weight files but no config.json")
            fmt = "safetensors" if st else "torch"
    task, arch = guess_task(config)
    return ModelDescription(fmt, files, task=task, architecture=arch, params=params, dtype=_main_dtype(dtypes),
                            config=config)
