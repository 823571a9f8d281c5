"""The two ways a version runs: a transformers model (PyTorch) or an onnxruntime session.

A backend takes the model inputs as numpy arrays (what the tokenizer / image processor makes),
turns them into its native form once (`to_native`, outside any timing), and `run`s them,
returning the one output tensor the task adapter needs as a numpy array. Everything
task-specific (pooling, losses, label maps) lives in the adapters, so a PyTorch version and an
ONNX version of the same model go through exactly the same post-processing.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np

from relman.errors import EvaluationError
from relman.tasks.specs import get_task


def resolve_device(device: str | None) -> str:
    """'auto' → 'cuda' when torch sees a GPU, else 'cpu'."""
    if device in (None, "", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise EvaluationError(f"device '{device}' was asked for, but no CUDA GPU is available here")
    elif device != "cpu":
        raise EvaluationError(f"unknown device '{device}' (use cpu, cuda, cuda:N or auto)")
    return device


class Backend:
    fmt: str
    device: str
    threads: int
    input_names: list[str]
    output: str

    def to_native(self, arrays: dict[str, np.ndarray]) -> Any:
        raise NotImplementedError

    def run(self, native: Any) -> np.ndarray:
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait for queued device work (CUDA); a no-op on CPU."""


class TorchBackend(Backend):
    fmt = "torch"

    def __init__(self, folder: Path, fmt: str, task: str, device: str, threads: int | None) -> None:
        import torch

        from relman.modelio.loading import load_torch_model

        if threads:
            torch.set_num_threads(int(threads))
        self.threads = torch.get_num_threads()  # what inference really uses, for the record
        self.torch = torch
        self.device = device
        self.task = task
        self.model = load_torch_model(Path(folder), task, device, fmt=fmt)
        self.spec = get_task(task, EvaluationError)
        self.output = self.spec.output
        params = inspect.signature(self.model.forward).parameters
        self.accepts = set(params)
        self.input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids", "pixel_values")
                            if n in self.accepts]
        self.float_dtype = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), torch.float32)

    def to_native(self, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        out = {}
        for name, value in arrays.items():
            if name not in self.accepts:
                continue
            t = self.torch.from_numpy(np.ascontiguousarray(value))
            if t.is_floating_point():
                t = t.to(self.float_dtype)
            out[name] = t.to(self.device)
        return out

    def forward(self, native: dict[str, Any]) -> Any:
        """The raw output tensor (on the device), for callers that need gradients (FGSM)."""
        kwargs = dict(native)
        if self.spec.causal:
            kwargs["use_cache"] = False
        return self.model(**kwargs, return_dict=True)[self.output]

    def run(self, native: dict[str, Any]) -> np.ndarray:
        with self.torch.inference_mode():
            out = self.forward(native)
        return out.float().cpu().numpy()

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()


_ORT_NUMPY = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
              "tensor(float16)": np.float16, "tensor(double)": np.float64, "tensor(bool)": np.bool_}


class OnnxBackend(Backend):
    fmt = "onnx"

    def __init__(self, folder: Path, task: str, device: str, threads: int | None) -> None:
        from relman.modelio.loading import onnx_session

        self.device = device
        self.task = task
        self.session = onnx_session(Path(folder), device=device, threads=threads)
        # onnxruntime's default intra-op pool is one thread per physical core
        self.threads = int(threads) if threads else _physical_cores()
        if device.startswith("cuda") and "CUDAExecutionProvider" not in self.session.get_providers():
            # Never report CPU timings under a 'cuda' label.
            raise EvaluationError(f"{folder}: onnxruntime here has no CUDA execution provider, so this ONNX "
                                  "version cannot run on the GPU; evaluate it with --device cpu")
        self.inputs = {i.name: _ORT_NUMPY.get(i.type, np.float32) for i in self.session.get_inputs()}
        self.input_names = list(self.inputs)
        outputs = [o.name for o in self.session.get_outputs()]
        wanted = get_task(task, EvaluationError).output
        self.output = wanted if wanted in outputs else outputs[0]
        self._outputs = [self.output]
        known = {"input_ids", "attention_mask", "token_type_ids", "pixel_values"}
        # A causal LM exported for generation (ONNX Runtime GenAI's builder, Optimum's
        # with-past export) also takes a key/value cache and often position ids; a whole-sequence
        # forward pass is the first generation step: an empty cache, positions 0..T-1.
        self.cache_inputs: dict[str, list[int | str | None]] = {}
        self.cache_dims: dict[str, int] = {}
        if get_task(task, EvaluationError).causal:
            shapes = {i.name: list(i.shape) for i in self.session.get_inputs()}
            self.cache_inputs = {n: shapes[n] for n in self.input_names if is_cache_input(n)}
            known = known | {"position_ids"} | set(self.cache_inputs)
            if self.cache_inputs:
                self.cache_dims = cache_dims(Path(folder))
        unknown = [n for n in self.input_names if n not in known]
        if unknown:
            raise EvaluationError(f"{folder}: the ONNX model expects inputs {', '.join(unknown)}, which a "
                                  f"{task} adapter cannot provide (it feeds {', '.join(sorted(known))})")

    def to_native(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {}
        for name, dtype in self.inputs.items():
            if name in arrays:
                feeds[name] = np.ascontiguousarray(arrays[name], dtype=dtype)
            elif name == "token_type_ids" and "input_ids" in arrays:
                feeds[name] = np.zeros_like(arrays["input_ids"], dtype=dtype)
            elif name in self.cache_inputs and "input_ids" in arrays:
                feeds[name] = empty_cache(self.cache_inputs[name], len(arrays["input_ids"]), dtype, self.cache_dims)
            elif name == "position_ids" and self.cache_inputs and "attention_mask" in arrays:
                mask = np.asarray(arrays["attention_mask"], dtype=np.int64)
                feeds[name] = np.clip(np.cumsum(mask, axis=1) - 1, 0, None).astype(dtype)
            else:
                raise EvaluationError(f"the ONNX model needs input '{name}', which the preprocessing did not make")
        return feeds

    def run(self, native: dict[str, np.ndarray]) -> np.ndarray:
        out = self.session.run(self._outputs, native)[0]
        return out if out.dtype == np.float32 else out.astype(np.float32)


def is_cache_input(name: str) -> bool:
    """A past key/value input of a generation graph ("past_key_values.0.key", "past.0.value")."""
    return name.startswith(("past_key_values", "past.", "past_"))


def empty_cache(shape: list[int | str | None], batch: int, dtype: Any, named: dict[str, int] | None = None) -> np.ndarray:
    """A zero-length cache entry: batch first; fixed dims (KV heads, head size) as the graph says
    or, where the graph names them (GenAI's "kv_cache_dim"), from `named`; the past sequence
    length 0."""
    dims = [batch]
    for d in shape[1:]:
        if isinstance(d, int) and d >= 0:
            dims.append(d)
        elif isinstance(d, str) and ("sequence" in d or "past" in d):
            dims.append(0)
        elif isinstance(d, str) and named and d in named:
            dims.append(int(named[d]))
        else:
            raise EvaluationError(f"cannot size the key/value cache input: its dimension '{d}' is neither a "
                                  "sequence length nor a size the model's config gives")
    return np.zeros(dims, dtype=dtype)


def cache_dims(folder: Path) -> dict[str, int]:
    """Sizes a generation graph may leave symbolic in its cache inputs, from genai_config.json
    (ONNX Runtime GenAI's builder) or config.json: head size and KV head count."""
    import json

    dims: dict[str, int] = {}
    cfg_path = Path(folder) / "config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    heads = cfg.get("num_attention_heads") or cfg.get("n_head")
    head = cfg.get("head_dim") or (int(cfg["hidden_size"]) // int(heads) if heads and cfg.get("hidden_size") else None)
    kv = cfg.get("num_key_value_heads") or heads
    genai = Path(folder) / "genai_config.json"
    if genai.is_file():
        decoder = json.loads(genai.read_text(encoding="utf-8")).get("model", {}).get("decoder", {})
        head = decoder.get("head_size") or head
        kv = decoder.get("num_key_value_heads") or kv
    if head:
        for name in ("kv_cache_dim", "head_size", "head_dim"):
            dims[name] = int(head)
    if kv:
        for name in ("num_key_value_heads", "num_kv_heads", "kv_heads"):
            dims[name] = int(kv)
    return dims


def _physical_cores() -> int:
    import os

    try:
        import psutil

        return int(psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    except ImportError:
        return os.cpu_count() or 1


def open_backend(folder: Path, fmt: str, task: str, device: str, threads: int | None) -> Backend:
    if fmt == "onnx":
        return OnnxBackend(folder, task, device, threads)
    return TorchBackend(folder, fmt, task, device, threads)
