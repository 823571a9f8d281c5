"""Recognise and check a model on disk before anything is stored: format, files, task,
parameter count, dtype.

Safetensors headers are parsed by hand (no torch needed, and a truncated file is caught by
comparing the header's offsets with the file size). ONNX is parsed with `onnx` without
loading external data. Pickle-based torch files are opened only with
`torch.load(weights_only=True)`, which refuses any pickle that would import code. A config
that needs `trust_remote_code` is refused. Nothing here touches a network.
"""

from __future__ import annotations

import os
import re
import struct
from collections import Counter
from dataclasses import dataclass, field
from math import prod
from pathlib import Path, PurePosixPath
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
    left_out: list[str] = field(default_factory=list)  # files in the folder that were not stored
    pin: dict[str, Any] | None = None  # a peft-adapter's pin to its base (relman_adapter.json)

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files.values())


# -- task guessing ----------------------------------------------------------------------------
def guess_task(config: dict[str, Any]) -> tuple[str | None, str | None]:
    """(task, architecture) from a config.json's `architectures` list (by the suffixes in the
    task table)."""
    archs = config.get("architectures") or []
    arch = archs[0] if isinstance(archs, list) and archs else None
    if not isinstance(arch, str) or not arch:
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
def _st_error(path: Path, what: str) -> ModelImportError:
    return ModelImportError(f"{path}: corrupt safetensors header ({what})")


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """Parse and check a .safetensors header; raises on a truncated or corrupt file.

    Our checks (types of every field, shapes of whole numbers >= 0, offsets inside the data
    area, tensors that neither overlap nor leave holes, sizes that match the file) run first so
    the message names the tensor; then the safetensors library opens the file with its own
    checks, so nothing it would refuse is ever stored."""
    from relman import jsonlimits

    size = path.stat().st_size
    if size < 8:
        raise ModelImportError(f"{path}: not a safetensors file (only {size} bytes)")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > min(size - 8, 100 * 1024 * 1024):
            raise _st_error(path, f"declares {n} header bytes in a {size}-byte file")
        raw = f.read(n)
    if not raw.lstrip().startswith(b"{"):
        raise _st_error(path, "not a JSON object")
    header = jsonlimits.loads(raw, f"{path}: corrupt safetensors header", error=ModelImportError, max_depth=4)
    if not isinstance(header, dict):
        raise _st_error(path, "not a JSON object")
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise _st_error(path, "__metadata__ must map names to text")
            continue
        if not isinstance(info, dict):
            raise _st_error(path, f"entry '{name}' is malformed")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str):
            raise _st_error(path, f"tensor '{name}': dtype must be text, not {type(dtype).__name__}")
        width = SAFETENSORS_DTYPE_BYTES.get(dtype)
        if width is None:
            raise ModelImportError(f"{path}: tensor '{name}' has unknown dtype {dtype}")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise _st_error(path, f"tensor '{name}': shape must be a list of whole numbers >= 0, not {shape!r:.60}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
            raise _st_error(path, f"tensor '{name}': data_offsets must be two whole numbers, not {offsets!r:.60}")
        begin, end = offsets
        if begin < 0 or end < begin:
            raise _st_error(path, f"tensor '{name}': data_offsets {offsets} point before the data area "
                                  "(into the header) or backwards")
        if end - begin != prod(shape) * width:
            raise ModelImportError(f"{path}: tensor '{name}' has {end - begin} bytes for shape {shape} {dtype}")
        spans.append((begin, end, name))
    pos, prev = 0, None
    for begin, end, name in sorted(spans):
        if begin < pos:
            raise _st_error(path, f"tensors '{prev}' and '{name}' overlap")
        if begin > pos:
            raise _st_error(path, f"{begin - pos} unused bytes before tensor '{name}'")
        pos, prev = end, name
    if 8 + n + pos != size:
        what = "truncated" if 8 + n + pos > size else "has trailing bytes"
        raise ModelImportError(f"{path}: safetensors file is {what} (header expects {8 + n + pos} bytes, "
                               f"file has {size})")
    _safetensors_library_check(path)
    return header


def _safetensors_library_check(path: Path) -> None:
    """Open the file with the safetensors library itself (numpy framework: no torch)."""
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover - safetensors is a dependency
        return
    try:
        with safe_open(str(path), framework="numpy") as f:
            list(f.keys())
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelImportError(f"{path}: refused by the safetensors library ({first[:160]})") from None


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


# Files a model folder keeps besides its weights: configs, vocabularies, templates, cards.
KEEP_SUFFIXES = (".json", ".txt", ".model", ".md", ".tiktoken", ".jinja", ".vocab", ".codes", ".bpe", ".spm")
_TORCH_WEIGHTS = re.compile(r"^(pytorch_model|model)(-\d+-of-\d+)?\.(bin|pt|pth)$")


def _check_json(path: Path, rel: str) -> dict[str, Any] | list[Any] | Any:
    from relman import jsonlimits

    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ModelImportError(f"{path}: cannot read ({e.strerror or e})") from None
    obj = jsonlimits.loads(raw, str(path), error=ModelImportError)
    if PurePosixPath(rel).name in ("config.json", "tokenizer_config.json", "preprocessor_config.json",
                                   "processor_config.json", "generation_config.json") and isinstance(obj, dict):
        if obj.get("auto_map") or obj.get("trust_remote_code"):
            raise UnsafeModelError(f"{path}: this model needs trust_remote_code (its {PurePosixPath(rel).name} has "
                                   "'auto_map'); relman never runs code shipped with a model")
    return obj


def _check_config(path: Path) -> dict[str, Any]:
    config = _check_json(path, "config.json")
    if not isinstance(config, dict):
        raise ModelImportError(f"{path}: expected a JSON object")
    return config


def _folder_files(folder: Path) -> dict[str, Path]:
    """Every regular file under `folder` (hidden files and caches skipped), walked without
    following directory links, so a symlink loop cannot recurse; names must be UTF-8 text."""
    files = {}
    root = folder.resolve()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
        for fn in sorted(filenames):
            p = Path(dirpath) / fn
            try:
                rel = p.relative_to(folder).as_posix()
                rel.encode("utf-8")
            except UnicodeEncodeError:
                raise ModelImportError(f"{folder}: file name {os.fsencode(p.name)!r} is not UTF-8 text; rename it") from None
            if any(part.startswith(".") for part in PurePosixPath(rel).parts):
                continue
            if p.is_symlink():
                try:
                    target = p.resolve(strict=True)
                except (OSError, RuntimeError):
                    raise ModelImportError(f"{p}: symbolic link is broken or loops") from None
                if not target.is_relative_to(root):
                    raise UnsafeModelError(f"{p}: symbolic link points outside the model folder")
            if p.is_file() and p.suffix != ".py":
                files[rel] = p
        for d in dirnames:
            dp = Path(dirpath) / d
            if dp.is_symlink():
                try:
                    target = dp.resolve(strict=True)
                except (OSError, RuntimeError):
                    raise ModelImportError(f"{dp}: symbolic link is broken or loops") from None
                if not target.is_relative_to(root):
                    raise UnsafeModelError(f"{dp}: symbolic link points outside the model folder")
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
    """Check every file that will be stored with its format's own reader; files the model does
    not need (pickles beside safetensors, optimizer states, unknown binaries) are left out and
    listed in `left_out`, never stored unchecked."""
    files = _folder_files(folder)
    if not files:
        raise ModelImportError(f"{folder}: folder is empty")
    from relman.modelio import peft_adapter

    if peft_adapter.PEFT_CONFIG in files or peft_adapter.PIN in files:  # never stored as plain weights
        pin, _, params, dtype = peft_adapter.check_import_folder(folder, files)
        return ModelDescription(peft_adapter.FORMAT, {rel: files[rel] for rel in peft_adapter.FILES},
                                task=pin["task"], params=params, dtype=dtype, pin=pin,
                                left_out=sorted(rel for rel in files if rel not in peft_adapter.FILES))
    config: dict[str, Any] = {}
    if "config.json" in files:
        config = _check_config(files["config.json"])
    weights = [rel for rel in files if rel.lower().endswith(WEIGHT_SUFFIXES)]
    if not weights:
        raise ModelImportError(f"{folder}: no weights found (expected *.safetensors, pytorch_model.bin or *.onnx)")
    onnx_files = [rel for rel in weights if rel.lower().endswith(".onnx")]
    st = [rel for rel in weights if rel.lower().endswith(".safetensors")]
    pickles = [rel for rel in weights if rel.lower().endswith(PICKLE_SUFFIXES)]
    params = 0
    dtypes: Counter[str] = Counter()
    keep: list[str] = []
    if onnx_files:
        fmt = "onnx"
        for rel in onnx_files:
            p, d, externals = onnx_stats(files[rel])
            params += p
            dtypes.update(d)
            keep.append(rel)
            keep += [e.relative_to(folder.resolve()).as_posix() for e in externals]
    elif st:
        fmt = "hf" if config else "safetensors"
        for rel in st:
            p, d = safetensors_stats(files[rel])
            params += p
            dtypes.update(d)
        keep += st
        if not config and len(st) != 1:
            raise ModelImportError(f"{folder}: several weight files but no config.json")
    else:
        chosen = [rel for rel in pickles if _TORCH_WEIGHTS.match(PurePosixPath(rel).name)] if config else pickles
        chosen = chosen or pickles
        if not config and len(chosen) != 1:
            raise ModelImportError(f"{folder}: several weight files but no config.json")
        for rel in chosen:
            p, d = torch_state_dict_stats(files[rel])
            params += p
            dtypes.update(d)
        keep += chosen
        fmt = "hf" if config else "torch"
    for rel in files:
        if rel not in keep and rel.lower().endswith(KEEP_SUFFIXES) and not rel.lower().endswith(WEIGHT_SUFFIXES):
            if rel.lower().endswith(".json"):
                _check_json(files[rel], rel)
            keep.append(rel)
    left_out = sorted(rel for rel in files if rel not in keep)
    task, arch = guess_task(config)
    return ModelDescription(fmt, {rel: files[rel] for rel in sorted(set(keep)) if rel in files}, task=task,
                            architecture=arch, params=params, dtype=_main_dtype(dtypes), config=config,
                            left_out=left_out)
