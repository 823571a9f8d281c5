"""The `peft-adapter` format: a LoRA adapter stored without its base, pinned to it by hash.

A version of this format holds only what the adapter adds (PEFT's own layout, so any PEFT user
can read an export):

    adapter_model.safetensors   LoRA A/B matrices + any new or re-initialised module (the head)
    adapter_config.json         PEFT's LoraConfig (r, lora_alpha, target_modules, modules_to_save)
    relman_adapter.json         the pin: base version id, ref and manifest sha256, base format and
                                task, the composed model's task and head (labels)

Why a pin and not a name: PEFT loads an adapter onto whatever base it is given, and users load
adapters onto the wrong base revision without noticing (peft#1567). Here the base is identified
by its manifest sha256 (the hash over its files' hashes), so composing refuses, naming the base,
when the base is not in the catalog, when its catalog row says another manifest, or when the
bytes laid out on disk do not hash to the pinned manifest.

A materialised adapter folder also holds `.relman-base.json`, written by `materialize`, which
points to the base's materialised folder: the loader, `read_config` and `load_preprocessor`
(config and tokenizer come from the base) follow it. It is not part of the version's files.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relman.errors import AdapterBaseError, ModelImportError

if TYPE_CHECKING:
    import torch

FORMAT = "peft-adapter"
WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"
PIN = "relman_adapter.json"
POINTER = ".relman-base.json"
FILES = (WEIGHTS, PEFT_CONFIG, PIN)

# keys of adapter_config.json we read, with the types we accept (anything else is refused)
_CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "peft_type": (str,), "r": (int,), "lora_alpha": (int, float), "target_modules": (list, str),
    "modules_to_save": (list, type(None)), "lora_dropout": (int, float), "bias": (str,),
    "base_model_name_or_path": (str, type(None)), "revision": (str, type(None)),
    "rank_pattern": (dict, type(None)), "alpha_pattern": (dict, type(None)),
}
MAX_RANK = 65_536  # far above any LoRA rank in use; r = 10**30 would size a matrix of 10**30 rows
_MODULE_NAME = re.compile(r"[A-Za-z0-9_][\w.\-]{0,199}")  # a module name, not a regular expression
_CLASS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_TRANSFORMERS_MODULE = re.compile(r"transformers(?:\.[A-Za-z_][A-Za-z0-9_]*){1,4}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_OVERRIDE_KEYS = {"num_labels", "id2label", "label2id"}  # the new head relman's LoRA fine-tune records


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    import math

    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_adapter_folder(folder: Path | str) -> bool:
    return (Path(folder) / PIN).is_file() and (Path(folder) / PEFT_CONFIG).is_file()


def _read_json(path: Path) -> dict[str, Any]:
    from relman import jsonlimits

    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ModelImportError(f"{path} is not a readable JSON file ({e.strerror or e})") from None
    data = jsonlimits.loads(raw, f"{path} is not a readable JSON file", error=ModelImportError)
    if not isinstance(data, dict):
        raise ModelImportError(f"{path} must hold a JSON object")
    return data


def _module_names(value: Any, path: Path, key: str) -> None:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and _MODULE_NAME.fullmatch(n) for n in names):
        raise ModelImportError(f"{path}: '{key}' must list module names (letters, digits, _ . -); a regular "
                               "expression or another value is not accepted")


def check_peft_config(path: Path) -> dict[str, Any]:
    """adapter_config.json parsed and checked: a LoRA config with sane types and bounded values
    (nothing else is loaded, so a file naming custom classes or code never reaches PEFT)."""
    cfg = _read_json(path)
    for key, types in _CONFIG_TYPES.items():
        if key in cfg and not isinstance(cfg[key], types):
            raise ModelImportError(f"{path}: '{key}' has the wrong type ({type(cfg[key]).__name__})")
    if str(cfg.get("peft_type", "")).upper() != "LORA":
        raise ModelImportError(f"{path}: only LoRA adapters are supported (peft_type is {cfg.get('peft_type')!r})")
    if not _whole(cfg.get("r")) or not 1 <= cfg["r"] <= MAX_RANK:
        raise ModelImportError(f"{path}: 'r' must be a whole number from 1 to {MAX_RANK:,}")
    if "lora_alpha" in cfg and not (_finite(cfg["lora_alpha"]) and cfg["lora_alpha"] > 0):
        raise ModelImportError(f"{path}: 'lora_alpha' must be a finite number above 0")
    if "lora_dropout" in cfg and not (_finite(cfg["lora_dropout"]) and 0 <= cfg["lora_dropout"] < 1):
        raise ModelImportError(f"{path}: 'lora_dropout' must be a number from 0 up to 1")
    if not cfg.get("target_modules"):
        raise ModelImportError(f"{path}: 'target_modules' is empty")
    _module_names(cfg["target_modules"], path, "target_modules")
    if cfg.get("modules_to_save") is not None:
        _module_names(cfg["modules_to_save"], path, "modules_to_save")
    for key, ok in (("rank_pattern", lambda v: _whole(v) and 1 <= v <= MAX_RANK),
                    ("alpha_pattern", lambda v: _finite(v) and v > 0)):
        pattern = cfg.get(key) or {}
        _module_names(list(pattern), path, key)
        if not all(ok(v) for v in pattern.values()):
            raise ModelImportError(f"{path}: '{key}' holds a value out of range")
    mapping = cfg.get("auto_mapping")  # PEFT's AutoPeftModel imports this module; relman never does
    if mapping is not None and not (
            isinstance(mapping, dict) and set(mapping) <= {"base_model_class", "parent_library"}
            and isinstance(mapping.get("base_model_class"), str) and _CLASS_NAME.fullmatch(mapping["base_model_class"])
            and isinstance(mapping.get("parent_library"), str)
            and _TRANSFORMERS_MODULE.fullmatch(mapping["parent_library"])):
        raise ModelImportError(f"{path}: 'auto_mapping' must name a transformers class (base_model_class, "
                               "parent_library transformers.*); not accepted")
    if cfg.get("megatron_config") is not None or cfg.get("megatron_core") not in (None, "megatron.core"):
        raise ModelImportError(f"{path}: 'megatron_config' / 'megatron_core' would make PEFT import another "
                               "module; not accepted")
    return cfg


def check_ranks(cfg: dict[str, Any], header: dict[str, Any], path: Path) -> None:
    """The LoRA matrices in the weights' header agree with the config: each module's A is r x in
    and its B out x r, with r the config's (or its rank_pattern's, where one is given)."""
    shapes: dict[str, dict[str, list[int]]] = {}
    for name, meta in header.items():
        for part in ("lora_A", "lora_B"):
            marker = f".{part}."
            if marker in name and isinstance(meta, dict):
                shapes.setdefault(name.split(marker)[0], {})[part] = list(meta.get("shape") or [])
    if not shapes:
        raise ModelImportError(f"{path}: holds no LoRA matrices (lora_A / lora_B)")
    pattern = cfg.get("rank_pattern") or {}
    for module, pair in sorted(shapes.items()):
        a, b = pair.get("lora_A"), pair.get("lora_B")
        if a is None or b is None or len(a) != 2 or len(b) != 2 or a[0] != b[1]:
            raise ModelImportError(f"{path}: the LoRA matrices of {module} do not pair (A {a}, B {b})")
        if not pattern and a[0] != cfg["r"]:
            raise ModelImportError(f"{path}: {module} has rank {a[0]}, adapter_config.json says r={cfg['r']}")


def check_pin_against(pin: dict[str, Any], cfg: dict[str, Any], path: Path) -> None:
    """The pin's own fields, and that it describes the adapter beside it (a pin copied from
    another adapter, or edited, does not)."""
    if not _whole(pin.get("base_version_id")) or pin["base_version_id"] < 1:
        raise ModelImportError(f"{path}: 'base_version_id' must be a whole number above 0")
    if not isinstance(pin.get("base_manifest_sha256"), str) or not _SHA256.fullmatch(pin["base_manifest_sha256"]):
        raise ModelImportError(f"{path}: 'base_manifest_sha256' must be 64 lowercase hex digits")
    for key in ("base_ref", "task"):
        if not isinstance(pin.get(key), str) or not pin[key] or len(pin[key]) > 300:
            raise ModelImportError(f"{path}: '{key}' must be text")
    for key in ("base_format", "base_task"):
        if pin.get(key) is not None and not isinstance(pin[key], str):
            raise ModelImportError(f"{path}: '{key}' must be text")
    if pin.get("base_format") == FORMAT:
        raise ModelImportError(f"{path}: the base is itself an adapter; adapters of adapters are not supported")
    overrides = pin.get("config_overrides") or {}
    if not isinstance(overrides, dict) or not set(overrides) <= _OVERRIDE_KEYS:
        raise ModelImportError(f"{path}: 'config_overrides' may only set {', '.join(sorted(_OVERRIDE_KEYS))}")
    id2label, label2id = overrides.get("id2label", {}), overrides.get("label2id", {})
    if not (isinstance(id2label, dict) and all(isinstance(k, str) and k.isdigit() and len(k) < 7
                                               and isinstance(v, str) for k, v in id2label.items())
            and isinstance(label2id, dict) and all(isinstance(k, str) and _whole(v) for k, v in label2id.items())
            and ("num_labels" not in overrides or (_whole(overrides["num_labels"])
                                                   and 1 <= overrides["num_labels"] <= 100_000))):
        raise ModelImportError(f"{path}: 'config_overrides' holds a malformed label set")
    for key in ("r", "lora_alpha"):
        if key in pin and pin[key] != cfg.get(key):
            raise ModelImportError(f"{path}: the pin says {key}={pin[key]!r}, adapter_config.json {cfg.get(key)!r}")
    for key in ("target_modules", "modules_to_save"):
        mine, theirs = pin.get(key) or [], cfg.get(key) or []
        if key in pin and sorted(mine if isinstance(mine, list) else [mine]) != \
                sorted(theirs if isinstance(theirs, list) else [theirs]):
            raise ModelImportError(f"{path}: the pin's {key} differ from adapter_config.json's")
    revision = cfg.get("revision")
    if revision is not None and revision != pin["base_manifest_sha256"]:
        raise ModelImportError(f"{path}: adapter_config.json names base revision {str(revision)[:16]}…, the pin "
                               f"{pin['base_manifest_sha256'][:16]}…")


def check_weights(path: Path) -> dict[str, Any]:
    """The safetensors header of the adapter weights, checked without loading the tensors."""
    import struct

    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n <= 0 or n > 100_000_000:
                raise ValueError("header size out of range")
            header = json.loads(fh.read(n))
        size = path.stat().st_size
    except (OSError, ValueError, struct.error) as e:
        raise ModelImportError(f"{path} is not a safetensors file ({e})") from None
    if not isinstance(header, dict):
        raise ModelImportError(f"{path}: the safetensors header is not an object")
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta.get("data_offsets", (0, -1))
        if not (0 <= start <= end <= size - 8 - n):
            raise ModelImportError(f"{path}: tensor '{name}' lies outside the file")
    return header


def check_import_folder(folder: Path, files: dict[str, Path]) -> tuple[dict[str, Any], dict[str, Any], int, str | None]:
    """An adapter folder offered to `relman import`: (pin, config, parameter count, dtype).

    Every file that will be stored is parsed and checked: the config (LoRA, bounded values, no
    class or module it would import), the weights (the full safetensors check, and ranks that
    agree with the config) and the pin (its fields, and that it describes this adapter). The
    base it names is checked against the catalog by the caller."""
    from relman.modelio.inspect import _main_dtype, read_safetensors_header, safetensors_stats

    if "config.json" in files:
        raise ModelImportError(f"{folder}: holds both config.json and {PEFT_CONFIG}; a model or an adapter, "
                               "not both")
    for name in (PEFT_CONFIG, WEIGHTS):
        if name not in files:
            raise ModelImportError(f"{folder}: a PEFT adapter folder without {name}")
    if PIN not in files:
        raise ModelImportError(f"{folder}: a PEFT adapter without {PIN}, the pin to its base's manifest; relman "
                               "imports only adapters it can pin (export one with 'relman export REF FOLDER "
                               "--format hf', or make one with 'relman compress BASE finetune -p method=lora')")
    cfg = check_peft_config(files[PEFT_CONFIG])
    params, dtypes = safetensors_stats(files[WEIGHTS])
    check_ranks(cfg, read_safetensors_header(files[WEIGHTS]), files[WEIGHTS])
    pin = read_pin(folder)
    check_pin_against(pin, cfg, files[PIN])
    return pin, cfg, params, _main_dtype(dtypes)


def check_fits_base(weights: Path, base_files: list[Path], where: str) -> None:
    """Every layer the adapter's LoRA matrices adapt exists in the pinned base with matching
    sizes (A is r x in, B out x r; either orientation, as GPT-2's Conv1D stores in x out).
    A pin naming another model's manifest fails here even when that manifest is in the catalog.
    Bases without safetensors weights (ONNX) have nothing to compare against."""
    from relman.modelio.inspect import read_safetensors_header

    base: dict[str, Any] = {}
    for f in base_files:
        base.update({k: v for k, v in read_safetensors_header(f).items() if k != "__metadata__"})
    if not base:
        return
    pairs: dict[str, dict[str, list[int]]] = {}
    for name, meta in read_safetensors_header(weights).items():
        for part in ("lora_A", "lora_B"):
            if f".{part}." in name and isinstance(meta, dict):
                pairs.setdefault(name.split(f".{part}.")[0], {})[part] = list(meta.get("shape") or [])
    for module, pair in sorted(pairs.items()):
        path = module.removeprefix("base_model.model.").split(".")
        target = None
        for start in range(len(path)):  # a classifier over an encoder base: 'bert.' is not in the base
            target = base.get(".".join(path[start:]) + ".weight")
            if target is not None:
                break
        if target is None:
            raise AdapterBaseError(f"{where}: it adapts {'.'.join(path)}, a layer its pinned base does not have; "
                                   "the pin names another model")
        shape = list(target.get("shape") or [])
        a, b = pair.get("lora_A") or [0, 0], pair.get("lora_B") or [0, 0]
        if len(shape) != 2 or sorted([a[-1], b[0]]) != sorted(shape):
            raise AdapterBaseError(f"{where}: its matrices for {'.'.join(path)} (in {a[-1]}, out {b[0]}) do not "
                                   f"fit the pinned base's layer {shape}; the pin names another model")


def read_pin(folder: Path | str) -> dict[str, Any]:
    pin = _read_json(Path(folder) / PIN)
    for key in ("base_ref", "base_manifest_sha256", "base_version_id", "task"):
        if key not in pin:
            raise ModelImportError(f"{Path(folder) / PIN}: missing '{key}'")
    return pin


def check_adapter_folder(folder: Path | str) -> dict[str, Any]:
    """Every file of an adapter version parsed and checked; returns the pin."""
    folder = Path(folder)
    for name in FILES:
        if not (folder / name).is_file():
            raise ModelImportError(f"{folder} is not a relman LoRA adapter: {name} is missing")
    check_peft_config(folder / PEFT_CONFIG)
    check_weights(folder / WEIGHTS)
    return read_pin(folder)


# -- the base ---------------------------------------------------------------------------------
def folder_manifest(folder: Path) -> str:
    """The manifest sha256 of the files under `folder`, computed exactly as the catalog does."""
    from relman.catalog.catalog import manifest_sha

    files = {}
    for f in sorted(Path(folder).rglob("*")):
        if f.is_file():
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            files[f.relative_to(folder).as_posix()] = h.hexdigest()
    return manifest_sha(files)


def _describe(pin: dict[str, Any]) -> str:
    return f"{pin['base_ref']} (version id {pin['base_version_id']}, manifest {pin['base_manifest_sha256'][:12]})"


def find_base(catalog: Any, pin: dict[str, Any], adapter_ref: str) -> Any:
    """The base version the pin names: by id when its manifest still matches, else any version
    with the pinned manifest (an adapter moved to another catalog with its base)."""
    from relman.errors import NotFound

    want = pin["base_manifest_sha256"]
    try:
        v = catalog.get_version(int(pin["base_version_id"]))
    except NotFound:
        v = None
    if v is not None and v.manifest_sha256 == want and not getattr(v, "deleted", False):
        return v
    for row in catalog.query("SELECT id FROM versions WHERE manifest_sha256 = ? ORDER BY id", [want]):
        other = catalog.get_version(row["id"])
        if not getattr(other, "deleted", False) and other.format != FORMAT:
            return other
    if v is not None and getattr(v, "deleted", False):
        raise AdapterBaseError(f"{adapter_ref} is a LoRA adapter of {_describe(pin)}, which was deleted from this "
                               "catalog; restore or re-import that base version first")
    if v is not None:
        raise AdapterBaseError(f"{adapter_ref} is a LoRA adapter of {_describe(pin)}, but that version's manifest "
                               f"is now {v.manifest_sha256[:12]}: the base was altered, so the adapter is not "
                               "loaded onto it")
    raise AdapterBaseError(f"{adapter_ref} is a LoRA adapter of {_describe(pin)}, which is not in this catalog; "
                           "import that base version first")


def materialize(catalog: Any, version: Any, workdir: Path) -> Path:
    """Lay out the adapter in `workdir/v<id>` and its pinned base in `workdir/v<base id>`, and
    point the first to the second. Refuses (naming the base) when the base cannot be found."""
    from relman.errors import IntegrityError, NotFound
    from relman.modelio.loading import materialize_version

    dest = Path(workdir) / f"v{version.id}"
    if not dest.exists():
        catalog.materialize(version.id, dest)
    pin = read_pin(dest)
    base = find_base(catalog, pin, version.ref)
    if base.format == FORMAT:
        raise AdapterBaseError(f"{version.ref}: its base {base.ref} is itself an adapter; adapters of adapters "
                               "are not supported")
    try:
        base_folder = materialize_version(catalog, base.id, workdir)
    except IntegrityError as e:
        raise AdapterBaseError(f"{version.ref}: the files of its base {_describe(pin)} are missing from the "
                               f"store ({e})") from None
    except NotFound as e:  # archived (or deleted meanwhile)
        raise AdapterBaseError(f"{version.ref}: its base {_describe(pin)} cannot be laid out: {e}") from None
    (dest / POINTER).write_text(json.dumps({"folder": str(base_folder.resolve()), "ref": base.ref,
                                            "format": base.format}), encoding="utf-8")
    return dest


def base_folder(folder: Path | str, *, verify: bool = True) -> Path:
    """The materialised base folder of the adapter in `folder`; with `verify`, its bytes must hash
    to the pinned manifest."""
    folder = Path(folder)
    pin = read_pin(folder)
    pointer = folder / POINTER
    if not pointer.is_file():
        raise AdapterBaseError(f"{folder} is a LoRA adapter of {_describe(pin)}; its base is not laid out "
                               "next to it (load it through the catalog, or compose it with that base yourself)")
    target = Path(_read_json(pointer).get("folder", ""))
    if not target.is_dir():
        raise AdapterBaseError(f"{folder}: the base {_describe(pin)} is missing (no folder at {target})")
    if verify:
        got = folder_manifest(target)
        if got != pin["base_manifest_sha256"]:
            raise AdapterBaseError(f"{folder}: the base files laid out for {_describe(pin)} hash to manifest "
                                   f"{got[:12]}: the base was altered, so the adapter is not loaded onto it")
    return target


def composed_config(folder: Path | str) -> dict[str, Any]:
    """The config.json of base + adapter: the base's, with the adapter's head (labels) on top."""
    from relman.modelio.loading import read_config

    pin = read_pin(folder)
    cfg = read_config(base_folder(folder, verify=False))
    cfg.update(pin.get("config_overrides") or {})
    return cfg


def load_peft(folder: Path, task: str) -> Any:
    """The PeftModel of base (checked against the pin) + adapter, on the CPU, in eval mode."""
    from peft import PeftModel

    folder = Path(folder)
    pin = check_adapter_folder(folder)
    if task != pin["task"]:
        raise ModelImportError(f"{folder}: this adapter makes a {pin['task']} model, not {task}")
    base = base_folder(folder)
    model = build_base_for_task(base, pin.get("base_format", "hf"), pin.get("base_task") or task, task,
                                pin.get("config_overrides") or {})
    peft_model = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
    peft_model.eval()
    return peft_model


def load_adapter(folder: Path, task: str, device: str = "cpu", *, merged: bool = False) -> "torch.nn.Module":
    """Loader of the `peft-adapter` format: base (checked against the pin) + adapter, in eval
    mode. The returned module is the transformers model with the LoRA layers in place (unmerged,
    so it computes exactly what the adapter does), or folded in with `merged`."""
    peft_model = load_peft(folder, task)
    module = peft_model.merge_and_unload() if merged else peft_model.get_base_model()
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module.to(device)


def build_base_for_task(base: Path, base_format: str, base_task: str, task: str,
                        overrides: dict[str, Any]) -> "torch.nn.Module":
    """The base as a float32 model of `task`: the stored base itself when the tasks agree, else
    (an encoder becoming a classifier) the classification model class built from the base's
    config with the new label set, the encoder weights loaded from the base and the head left
    for the adapter to supply. Seeded, so untouched fresh layers are the same on every load."""
    import torch

    from relman.modelio.loading import auto_class, load_torch_model

    if base_task == task and not overrides:
        return load_torch_model(base, task, "cpu", fmt=base_format).float()
    if base_format != "hf":
        raise ModelImportError(f"a new {task} head can only be put on an 'hf' base, not '{base_format}'")
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(base), local_files_only=True, trust_remote_code=False)
    for key, value in overrides.items():
        if key in ("id2label", "label2id"):
            value = {int(k) if key == "id2label" else k: (v if key == "id2label" else int(v))
                     for k, v in value.items()}
        setattr(cfg, key, value)
    torch.manual_seed(0)
    model = auto_class(task).from_pretrained(str(base), config=cfg, local_files_only=True, trust_remote_code=False,
                                             dtype=torch.float32, ignore_mismatched_sizes=True)
    return model.float()


def loader(folder: Path, task: str, device: str = "cpu") -> "torch.nn.Module":
    return load_adapter(folder, task, device)


def register() -> None:
    from relman.modelio.loading import TORCH_LOADERS

    TORCH_LOADERS.setdefault(FORMAT, loader)


register()
