"""Load a stored version for inference or further work — only inside workers (imports torch).

A runnable version is a folder: a Hugging Face folder (`format="hf"`: config.json + weights +
tokenizer / image processor) or an ONNX folder (`format="onnx"`: model.onnx [+ external data]
+ the same config and preprocessing files). Other formats are registered by the recipe that
produces them in `TORCH_LOADERS`. Remote code is never trusted and nothing is downloaded.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from relman.errors import ModelImportError

if TYPE_CHECKING:
    import onnxruntime
    import torch




@dataclass(frozen=True)
class TaskModel:
    """What loading needs to know about a task: the transformers Auto* class, what the model
    reads ("text": a tokenizer, "image": an image processor) and the config.json architecture
    suffixes that mean this task (for guessing it at import)."""

    auto_class: str
    modality: str
    architecture_suffixes: tuple[str, ...] = ()


# task name -> TaskModel. The task table (relman.tasks.specs, a layer above this one) fills it
# as it registers each task; TASK_TABLE_MODULE is imported on first use, the way
# TORCH_LOADER_MODULES below brings in a format's loader, so modelio never imports upwards.
TASK_MODELS: dict[str, TaskModel] = {}
TASK_TABLE_MODULE = "relman.tasks.specs"


def register_task_model(task: str, model: TaskModel) -> None:
    TASK_MODELS[task] = model


def task_models() -> dict[str, TaskModel]:
    if not TASK_MODELS:
        importlib.import_module(TASK_TABLE_MODULE)
    return TASK_MODELS


def task_model(task: str | None) -> TaskModel:
    models = task_models()
    try:
        return models[task or ""]
    except KeyError:
        raise ModelImportError(f"unknown task '{task}' (known: {', '.join(models)})") from None


# format name -> function(folder, task, device) returning a torch module, for formats that a
# recipe writes in its own layout (e.g. dynamically quantised PyTorch weights).
TORCH_LOADERS: dict[str, Callable[[Path, str, str], "torch.nn.Module"]] = {}
# format name -> module that registers its loader in TORCH_LOADERS when imported, so a worker
# that never ran the producing recipe (an evaluation, a later recipe) can still load it.
TORCH_LOADER_MODULES: dict[str, str] = {"hf-reshaped": "relman.modelio.reshaped",
                                        "torch-int8": "relman.modelio.torch_int8",
                                        "peft-adapter": "relman.modelio.peft_adapter",
                                        "ensemble": "relman.modelio.ensemble"}
# format name -> "module:function(folder, task, device, threads, open_runner)" returning a runner:
# versions that run through another version's runner and change what it returns (a
# post-processor). `relman.tasks.open_runner` asks here before loading weights.
RUNNER_WRAPPERS: dict[str, str] = {"fair-threshold": "relman.modelio.postprocessor:wrap_runner"}
# format name -> "module:function(catalog, version, workdir)" returning the version's folder, for
# versions whose folder needs other versions laid out beside it (an adapter's base, a
# post-processor's pinned parent, an ensemble's members).
MATERIALIZERS: dict[str, str] = {"peft-adapter": "relman.modelio.peft_adapter:materialize",
                                 "fair-threshold": "relman.modelio.postprocessor:materialize",
                                 "ensemble": "relman.modelio.ensemble:materialize"}


def auto_class(task: str) -> Any:
    """The transformers Auto* class the task table names for `task`."""
    import transformers

    return getattr(transformers, task_model(task).auto_class)


def read_config(folder: Path) -> dict[str, Any]:
    from relman.modelio import peft_adapter

    if peft_adapter.is_adapter_folder(folder):  # base's config + the adapter's head
        return peft_adapter.composed_config(folder)
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ModelImportError(f"{folder} has no config.json, so it cannot be run as a model")
    return json.loads(path.read_text(encoding="utf-8"))


def load_torch_model(folder: Path, task: str, device: str = "cpu", fmt: str = "hf",
                     torch_dtype: "torch.dtype | None" = None) -> "torch.nn.Module":
    """A transformers model in eval mode on `device`."""
    if fmt not in TORCH_LOADERS and fmt in TORCH_LOADER_MODULES:
        importlib.import_module(TORCH_LOADER_MODULES[fmt])
    if fmt in TORCH_LOADERS:
        return TORCH_LOADERS[fmt](Path(folder), task, device)
    if fmt != "hf":
        raise ModelImportError(f"a '{fmt}' version cannot be loaded as a PyTorch model")
    cls = auto_class(task)
    kwargs: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype
    model = cls.from_pretrained(str(folder), **kwargs)
    return model.to(device).eval()


def find_onnx(folder: Path) -> Path:
    candidates = sorted(Path(folder).glob("*.onnx"))
    if not candidates:
        raise ModelImportError(f"{folder} holds no .onnx file")
    preferred = [c for c in candidates if c.name == "model.onnx"]
    return (preferred or candidates)[0]


def onnx_providers(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.startswith("cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def onnx_session(folder_or_file: Path, device: str = "cpu", threads: int | None = None) -> "onnxruntime.InferenceSession":
    import onnxruntime as ort

    path = Path(folder_or_file)
    if path.is_dir():
        path = find_onnx(path)
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=onnx_providers(device))


def load_preprocessor(folder: Path, task: str) -> Any:
    """The tokenizer (text tasks) or image processor (image tasks) saved with the model (for a
    LoRA adapter: with its base)."""
    from relman.modelio import peft_adapter

    folder = Path(folder)
    if peft_adapter.is_adapter_folder(folder):
        folder = peft_adapter.base_folder(folder, verify=False)
    known = task_models().get(task or "")
    if known is not None and known.modality == "image":
        from transformers import AutoImageProcessor

        if not (folder / "preprocessor_config.json").is_file():
            raise ModelImportError(f"{folder} has no preprocessor_config.json for its images")
        return AutoImageProcessor.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


def materialize_version(catalog: Any, version_id: int, workdir: Path) -> Path:
    """Lay out a version's files in `workdir/v<id>` (hard links) and return the folder. A LoRA
    adapter gets its pinned base laid out too (refused, naming the base, when it is missing), an
    ensemble its members (MATERIALIZERS)."""
    version = catalog.get_version(version_id)
    if version.format in MATERIALIZERS:
        from relman import targets

        materialize: Callable[[Any, Any, Path], Path] = targets.resolve(MATERIALIZERS[version.format])
        return Path(materialize(catalog, version, Path(workdir)))
    dest = Path(workdir) / f"v{version_id}"
    if not dest.exists():
        catalog.materialize(version_id, dest)
    return dest
