"""ONNX export with dynamic batch and sequence axes, verified against PyTorch.

Why the TorchScript exporter (`dynamo=False`): in torch 2.13 the dynamo exporter refuses the
tiny BERT / GPT-2 / ViT models of transformers 5 in several ways (specialisation of size-1
dimensions, mask helpers), while the TorchScript tracer exports all three in well under a
second. A traced graph can in principle bake the traced shapes in, so the export is never
trusted: it is checked on inputs of *other* batch sizes and sequence lengths than the traced
ones (with padding), and refused when its outputs drift from PyTorch's by more than the
tolerance. The references are computed before exporting, with the model in eval mode,
because the exporter restores the wrapper's training flag afterwards.

Also here, because every ONNX-producing recipe needs them: the side files (config,
tokenizer, image processor) copied next to `model.onnx`, sample inputs for a task, running
an ONNX folder on them, and the byte count of a graph's weights.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from relman.errors import RecipeError
from relman.tasks.specs import find_task, get_task
# Weight files of either format: never copied as "side files".
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".data", ".onnx_data", ".h5",
                    ".msgpack")
ONNX_FILE = "model.onnx"
ONNX_DATA = "model.onnx.data"
# Protobuf refuses messages over 2 GiB; above this, weights go to model.onnx.data.
EXTERNAL_DATA_THRESHOLD = 1_500_000_000


@dataclass
class ExportResult:
    folder: Path
    input_names: list[str]
    output_name: str
    max_abs_diff: float
    opset: int


def copy_side_files(src: Path, dest: Path) -> list[str]:
    """Copy everything in `src` that is not weights (config.json, tokenizer files,
    preprocessor_config.json, generation_config.json, ...) into `dest`."""
    copied = []
    dest.mkdir(parents=True, exist_ok=True)
    for p in sorted(Path(src).iterdir()):
        name = p.name
        if not p.is_file() or name.startswith(".") or name.endswith(".index.json") \
                or name.lower().endswith(_WEIGHT_SUFFIXES):
            continue
        shutil.copy2(p, dest / name)
        copied.append(name)
    return copied


def text_input_names(model: Any, task: str) -> list[str]:
    import inspect

    accepted = set(inspect.signature(model.forward).parameters)
    names = ["input_ids", "attention_mask"]
    if not get_task(task, RecipeError).causal and "token_type_ids" in accepted \
            and getattr(model.config, "type_vocab_size", 0):
        names.append("token_type_ids")
    return names


def input_names(model: Any, task: str) -> list[str]:
    """The inputs a model of `task` is fed: pixels for an image model, token ids (and mask) for text."""
    return ["pixel_values"] if is_image(task) else text_input_names(model, task)


def is_image(task: str) -> bool:
    return get_task(task, RecipeError).modality == "image"


def sample_inputs(config: Any, task: str, names: list[str], batch: int, seq: int, *, pad: int = 0,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Random but valid model inputs (ids within the vocabulary; row 0 padded by `pad`)."""
    rng = np.random.default_rng(seed)
    if is_image(task):
        size = getattr(config, "image_size", 224)
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return {"pixel_values": rng.standard_normal((batch, getattr(config, "num_channels", 3), h, w))
                .astype(np.float32)}
    vocab = int(getattr(config, "vocab_size", 100) or 100)
    ids = rng.integers(0, vocab, size=(batch, seq), dtype=np.int64)
    mask = np.ones_like(ids)
    if pad:
        mask[0, seq - pad:] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in names:
        out["token_type_ids"] = np.zeros_like(ids)
    return {k: v for k, v in out.items() if k in names}


def max_seq_len(config: Any) -> int:
    return int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 512)


def verification_inputs(config: Any, task: str, names: list[str]) -> list[dict[str, np.ndarray]]:
    """Shapes unlike the traced (2, 8): other batch sizes, other lengths, padding."""
    if is_image(task):
        return [sample_inputs(config, task, names, b, 0, seed=10 + b) for b in (1, 3)]
    longest = min(24, max_seq_len(config))
    return [sample_inputs(config, task, names, 3, longest, pad=longest // 3, seed=11),
            sample_inputs(config, task, names, 1, min(5, longest), seed=12)]


def output_diff(a: np.ndarray, b: np.ndarray, feeds: dict[str, np.ndarray], task: str) -> float:
    """Max |a - b|, ignoring the outputs a per-token model produces at padding positions."""
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    spec = find_task(task)
    if spec is not None and spec.per_token_output and "attention_mask" in feeds and diff.ndim == 3:
        # a with-cache graph's mask also covers the past; the outputs are the new positions'
        diff = diff * feeds["attention_mask"][:, -diff.shape[1]:][..., None]
    return float(diff.max()) if diff.size else 0.0


def top1_agreement(outs: list[np.ndarray], refs: list[np.ndarray], feeds: list[dict[str, np.ndarray]]) -> float:
    """Mean over batches of how often a causal LM's next-token choice matches its reference's,
    over real (unpadded) positions."""
    return float(np.mean([(o.argmax(-1) == r.argmax(-1))[f["attention_mask"] > 0].mean()
                          for o, r, f in zip(outs, refs, feeds)]))


def _wrapper(model: Any, names: list[str], output: str, causal: bool) -> Any:
    import torch

    class Wrapped(torch.nn.Module):
        """Positional tensors in, the one named output out (no cache, no tuples)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            kwargs: dict[str, Any] = dict(zip(names, args))
            if causal:
                kwargs["use_cache"] = False
            return self.model(**kwargs, return_dict=True)[output]

    return Wrapped().eval()


def cache_names(layers: int) -> tuple[list[str], list[str]]:
    """Names of a with-cache graph's past inputs and present outputs, the convention of Optimum's
    and ONNX Runtime GenAI's graphs (so `relman.tasks.backends.is_cache_input` knows them)."""
    past = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    return past, present


def _cache_wrapper(model: Any) -> tuple[Any, int]:
    """The model as a graph with a key/value cache: (input_ids, attention_mask over past + new
    tokens, position_ids, past key/value per layer) -> (logits, present key/value per layer).
    Flat tensors in and out, so TorchScript traces it; the cache is rebuilt as a DynamicCache
    inside. Returns (module, number of layers)."""
    import torch
    from transformers import DynamicCache

    config = model.config
    layers = int(getattr(config, "num_hidden_layers", None) or config.n_layer)

    class WithCache(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                    *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
            cache = DynamicCache(config=config)
            for i in range(layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=cache, use_cache=True, return_dict=True)
            present: list[torch.Tensor] = []
            for layer in out.past_key_values.layers[:layers]:
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    return WithCache().eval(), layers


def _cache_shape(model: Any) -> tuple[int, int]:
    """(KV heads, head size) of a causal LM's cache, read from one real forward pass (configs
    spell them differently: num_key_value_heads, n_head, head_dim, n_embd / n_head ...)."""
    import torch

    with torch.inference_mode():
        out = model(input_ids=torch.zeros((1, 2), dtype=torch.long), use_cache=True, return_dict=True)
    keys = out.past_key_values.layers[0].keys
    return int(keys.shape[1]), int(keys.shape[3])


def with_past_feeds(feeds: dict[str, np.ndarray], layers: int, kv_heads: int, head_size: int,
                    past_len: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
    """`feeds` (input_ids, attention_mask) completed for a with-cache graph: positions from the
    mask, a past of `past_len` positions (random values, mask ones) per layer."""
    ids = feeds["input_ids"]
    batch = ids.shape[0]
    rng = np.random.default_rng(seed)
    mask = np.concatenate([np.ones((batch, past_len), dtype=np.int64), feeds["attention_mask"].astype(np.int64)], 1)
    out = {"input_ids": ids, "attention_mask": mask,
           "position_ids": np.clip(np.cumsum(mask, axis=1) - 1, 0, None)[:, past_len:].astype(np.int64)}
    past, _ = cache_names(layers)
    for name in past:
        out[name] = rng.standard_normal((batch, kv_heads, past_len, head_size)).astype(np.float32)
    return out


def save_onnx(model: Any, folder: Path) -> list[str]:
    """Write an `onnx.ModelProto` as folder/model.onnx, with model.onnx.data when too large for
    one protobuf; temp names first, so a failure leaves no half-written model. Returns the
    file names written."""
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (ONNX_FILE + ".partial")
    external = model.ByteSize() > EXTERNAL_DATA_THRESHOLD
    try:
        if external:
            onnx.save_model(model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=ONNX_DATA, size_threshold=1024)
        else:
            onnx.save_model(model, str(tmp))
        tmp.replace(folder / ONNX_FILE)
    except BaseException:
        tmp.unlink(missing_ok=True)
        (folder / ONNX_DATA).unlink(missing_ok=True)
        raise
    return [ONNX_FILE, ONNX_DATA] if external else [ONNX_FILE]


def move_onnx(src: Path, folder: Path) -> list[str]:
    """Store the ONNX model at `src` (with any external data files next to it, e.g. the one
    file per tensor the TorchScript exporter writes past 2 GB) as folder/model.onnx, plus
    model.onnx.data when it has external data: tensors are copied one at a time into the one
    data file and only the weightless graph is parsed, so memory stays at one tensor whatever
    the model's size. Temp names first; nothing half-written is left on failure."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    folder.mkdir(parents=True, exist_ok=True)
    graph = onnx.load(str(src), load_external_data=False)
    tensors = [t for t in all_tensors(graph) if uses_external_data(t)]
    if not tensors:
        tmp = folder / (ONNX_FILE + ".partial")
        try:
            shutil.copyfile(src, tmp)
            tmp.replace(folder / ONNX_FILE)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return [ONNX_FILE]
    tmp_model, tmp_data = folder / (ONNX_FILE + ".partial"), folder / (ONNX_DATA + ".partial")
    try:
        with open(tmp_data, "wb") as out:
            for t in tensors:
                info = ExternalDataInfo(t)
                path = (src.parent / info.location).resolve()
                if src.parent.resolve() not in path.parents:
                    raise RecipeError(f"external data of tensor {t.name} points outside the export folder")
                offset = out.tell()
                pad = (-offset) % 4096  # aligned, as onnx's own writer does, so it can be memory-mapped
                out.write(b"\0" * pad)
                offset += pad
                with open(path, "rb") as f:
                    f.seek(info.offset or 0)
                    left = info.length if info.length is not None else path.stat().st_size - (info.offset or 0)
                    written = 0
                    while left > 0:
                        chunk = f.read(min(left, 64 << 20))
                        if not chunk:
                            break
                        out.write(chunk)
                        written += len(chunk)
                        left -= len(chunk)
                del t.external_data[:]
                for k, v in (("location", ONNX_DATA), ("offset", str(offset)), ("length", str(written))):
                    entry = t.external_data.add()
                    entry.key, entry.value = k, v
        onnx.save_model(graph, str(tmp_model))
        tmp_data.replace(folder / ONNX_DATA)
        tmp_model.replace(folder / ONNX_FILE)
    except BaseException:
        tmp_model.unlink(missing_ok=True)
        tmp_data.unlink(missing_ok=True)
        raise
    return [ONNX_FILE, ONNX_DATA]


def all_tensors(model: Any) -> list[Any]:
    """Initializers of the main graph and of subgraphs, and tensor attributes (Constant nodes)."""
    from onnx.external_data_helper import _get_all_tensors

    return list(_get_all_tensors(model))


def release_freed_memory() -> None:
    """Hand memory freed by Python / PyTorch back to the OS (glibc keeps freed heap pages in the
    process otherwise), so a recipe's next phase starts from what is really in use."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


def onnx_weight_stats(path: Path) -> tuple[int, int, str | None]:
    """(parameters, bytes of weights, main dtype) of the initializers of an ONNX model."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    params = 0
    nbytes = 0
    by_dtype: dict[str, int] = {}
    for init in model.graph.initializer:
        n = int(np.prod(init.dims)) if init.dims else 1
        np_dtype = onnx.helper.tensor_dtype_to_np_dtype(init.data_type)
        width = np.dtype(np_dtype).itemsize if init.data_type not in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4) \
            else 0.5
        params += n
        nbytes += int(n * width)
        name = np.dtype(np_dtype).name
        by_dtype[name] = by_dtype.get(name, 0) + int(n * width)
    main = max(by_dtype, key=by_dtype.get) if by_dtype else None  # type: ignore[arg-type]
    return params, nbytes, main


def run_onnx(path: Path, feeds: Iterable[dict[str, np.ndarray]], output: str | None = None) -> list[np.ndarray]:
    """Outputs of the ONNX model at `path` (CPU) for each feed; inputs it lacks are dropped."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # a check runs a few small batches: pre-packed copies of the weights (~20 % more memory on
    # a 0.5 B LM) would not pay for themselves
    opts.add_session_config_entry("session.disable_prepacking", "1")
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    out_name = output if output in names else names[0]
    fill = _generation_inputs(session, Path(path).parent)
    return [session.run([out_name], fill({k: v for k, v in f.items() if k in wanted}))[0] for f in feeds]


def _generation_inputs(session: Any, folder: Path) -> Any:
    """A function completing a feed for a with-cache causal-LM graph (relman's `with_past`
    export, the builder's): an empty past and positions from the mask for the inputs the feed
    lacks, i.e. the whole-sequence first step every check and suite runs."""
    from relman.tasks.backends import cache_dims, empty_cache, is_cache_input

    types = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float16)": np.float16}
    inputs = {i.name: (list(i.shape), types.get(i.type, np.float32)) for i in session.get_inputs()}
    dims = cache_dims(folder) if any(is_cache_input(n) for n in inputs) else {}

    def fill(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "input_ids" not in feed:
            return feed
        out = dict(feed)
        for name, (shape, dtype) in inputs.items():
            if name in out:
                continue
            if is_cache_input(name):
                out[name] = empty_cache(shape, len(feed["input_ids"]), dtype, dims)
            elif name == "position_ids" and "attention_mask" in feed:
                mask = np.asarray(feed["attention_mask"], dtype=np.int64)
                out[name] = np.clip(np.cumsum(mask, axis=1) - 1, 0, None).astype(dtype)
        return out
    return fill


def export_onnx(src: Path, dest: Path, task: str, *, fmt: str = "hf", opset: int = 17,
                tolerance: float = 1e-4, model: Any = None, refs_file: Path | None = None,
                with_past: bool = False) -> ExportResult:
    """Export the model in `src` (format `fmt`, any format `load_torch_model` reads) to
    `dest/model.onnx` plus its side files; dynamic batch and sequence axes. Raises
    `RecipeError` (and writes nothing) if ONNX Runtime's outputs differ from PyTorch's by more
    than `tolerance` on inputs of other shapes than the traced ones.

    `with_past` (causal LMs): the graph also takes `past_key_values.<i>.key/value` and
    `position_ids` and returns `present.<i>.key/value`, so generation
    (`relman.tasks.onnx_generation`) feeds each step only the new token and reuses the cache;
    a whole-sequence call with an empty past gives the same logits as the plain graph, so every
    suite runs it too. Checked with an empty past and with a non-empty one.

    With `refs_file` the check is left to the caller (`verify_export`): the verification inputs
    and PyTorch's outputs go to that .npz and max_abs_diff is NaN. A process that exports a large
    model then exits before ONNX Runtime loads it, so the two never share its peak memory."""
    import torch

    from relman.modelio.loading import load_torch_model

    spec = find_task(task)
    if spec is None:
        from relman.tasks.specs import task_names

        raise RecipeError(f"cannot export a model of task '{task}' to ONNX (known: {', '.join(task_names())})")
    src, dest = Path(src), Path(dest)
    if model is None:
        model = load_torch_model(src, task, "cpu", fmt=fmt)
    model = model.float().to("cpu").eval()
    config = model.config
    output = spec.output
    if spec.modality == "image":
        names = ["pixel_values"]
        axes = {"pixel_values": {0: "batch"}}
        out_axes = {0: "batch"}
    else:
        names = text_input_names(model, task)
        axes = {n: {0: "batch", 1: "sequence"} for n in names}
        out_axes = {0: "batch", 1: "sequence"} if spec.per_token_output else {0: "batch"}
    wrapped = _wrapper(model, names, output, spec.causal)
    traced = sample_inputs(config, task, names, 2, min(8, max_seq_len(config)), seed=1)
    checks = verification_inputs(config, task, names)
    output_names = [output]
    if with_past:
        if not spec.causal:
            raise RecipeError(f"a key/value cache applies to causal LMs only, not to a {task} model")
        kv_heads, head_size = _cache_shape(model)
        wrapped, layers = _cache_wrapper(model)
        past, present = cache_names(layers)
        traced = with_past_feeds(traced, layers, kv_heads, head_size, past_len=3, seed=1)
        checks = [with_past_feeds(c, layers, kv_heads, head_size, past_len=p, seed=20 + p)
                  for c, p in zip(checks, (0, 4))]
        names = ["input_ids", "attention_mask", "position_ids"] + past
        axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total_sequence"},
                "position_ids": {0: "batch", 1: "sequence"}}
        axes.update({n: {0: "batch", 2: "past_sequence"} for n in past})
        axes.update({n: {0: "batch", 2: "total_sequence"} for n in present})
        output_names = [output] + present
    dest.mkdir(parents=True, exist_ok=True)
    # a scratch folder of its own: for >2 GB models the tracer writes one external-data file
    # per tensor next to its output, and none of those may end up in the version
    scratch = dest.parent / f".{dest.name}.export-tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    tmp = scratch / "model.onnx"
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapped, tuple(torch.from_numpy(traced[n]) for n in names), str(tmp),
                              input_names=names, output_names=output_names,
                              dynamic_axes={**axes, output: out_axes}, opset_version=opset, dynamo=False,
                              do_constant_folding=True)
        # PyTorch's references after the export, in eval mode again (the exporter may flip
        # training flags): computed before it, they left ~1 GB more in the process through the
        # export of a 0.5 B LM (maxrss 5.2 vs 4.2 GB, benchmarks/bench_half_billion.py)
        wrapped.eval()
        with torch.inference_mode():
            refs = [_first(wrapped(*[torch.from_numpy(f[n]) for n in names])).float().numpy() for f in checks]
        # then drop PyTorch's copy of the weights before ONNX Runtime loads its own, so a large
        # model is never held twice here
        del wrapped, model
        import gc

        gc.collect()
        release_freed_memory()
        if refs_file is not None:
            arrays = {f"ref{i}": r for i, r in enumerate(refs)}
            arrays.update({f"check{i}:{k}": v for i, f in enumerate(checks) for k, v in f.items()})
            np.savez(refs_file, **arrays)
            diff = float("nan")
        else:
            diff = _diff_or_refuse(tmp, checks, refs, output, task, tolerance, src.name)
        move_onnx(tmp, dest)
    except RecipeError:
        raise
    except Exception as e:
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise RecipeError(f"ONNX export of {src.name} ({task}) failed: {type(e).__name__}: {first}") from e
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    copy_side_files(src, dest)
    return ExportResult(dest, names, output, diff, opset)


def _first(out: Any) -> Any:
    """The logits of a plain graph's output or of a with-cache graph's (logits, present...)."""
    return out[0] if isinstance(out, tuple) else out


def _diff_or_refuse(path: Path, checks: list[dict[str, np.ndarray]], refs: list[np.ndarray], output: str, task: str,
                    tolerance: float, name: str) -> float:
    outs = run_onnx(path, checks, output)
    diff = max(output_diff(o, r, f, task) for o, r, f in zip(outs, refs, checks))
    if not np.isfinite(diff) or diff > tolerance:
        raise RecipeError(f"ONNX export of {name} differs from PyTorch by {diff:.3g} (max abs) on test "
                          f"inputs, over the tolerance {tolerance:g}; nothing stored")
    return diff


def verify_export(dest: Path, refs_file: Path, task: str, tolerance: float, name: str) -> float:
    """The check `export_onnx(refs_file=...)` left out, in this process: ONNX Runtime's outputs of
    dest/model.onnx against PyTorch's; on failure the export is removed and RecipeError raised."""
    with np.load(refs_file, allow_pickle=False) as data:
        n = sum(1 for k in data.files if k.startswith("ref"))
        refs = [data[f"ref{i}"] for i in range(n)]
        checks = [{k.split(":", 1)[1]: data[k] for k in data.files if k.startswith(f"check{i}:")} for i in range(n)]
    try:
        return _diff_or_refuse(dest / ONNX_FILE, checks, refs, get_task(task, RecipeError).output, task, tolerance, name)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def onnx_source(src: Path, fmt: str, task: str, workdir: Path, *, tolerance: float = 1e-4) -> tuple[Path, float | None]:
    """An ONNX file for a parent of format `fmt`: its own model.onnx, or an export made in
    `workdir` (with the export's max abs diff)."""
    from relman.modelio.loading import find_onnx

    if fmt == "onnx":
        return find_onnx(src), None
    if _weights_bytes(src) > SEPARATE_EXPORT_BYTES:
        return _export_in_child(src, workdir / "exported", task, fmt, tolerance)
    result = export_onnx(src, workdir / "exported", task, fmt=fmt, tolerance=tolerance)
    return result.folder / ONNX_FILE, result.max_abs_diff


# Above this many bytes of weights the export runs in a child process: PyTorch's copy of the
# weights and the exporter's are then returned to the OS when it exits, before ONNX Runtime
# checks the export (in the caller) and the recipe reads the graph. Measured on a 1.98 GB
# Qwen2-style LM (benchmarks/bench_half_billion.py): in one process the export's freed memory
# stayed and the recipe peaked at 2.8x the weights; now the export child peaks at 2.0x and
# the whole INT4 step at 2.15x.
SEPARATE_EXPORT_BYTES = 500_000_000


def _weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).iterdir()
               if p.is_file() and p.name.lower().endswith(_WEIGHT_SUFFIXES))


def _export_in_child(src: Path, dest: Path, task: str, fmt: str, tolerance: float) -> tuple[Path, float | None]:
    import json
    import subprocess
    import sys

    code = ("import json, sys; from pathlib import Path\n"
            "from relman.compress.export.onnx_export import export_onnx\n"
            "from relman.errors import RecipeError\n"
            "try:\n"
            "    r = export_onnx(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], fmt=sys.argv[4], "
            "tolerance=float(sys.argv[5]), refs_file=Path(sys.argv[6]))\n"
            "except RecipeError as e:\n"
            "    print(json.dumps({'error': str(e)})); sys.exit(3)\n"
            "print(json.dumps({'exported': True}))\n")
    refs_file = dest.parent / f".{dest.name}-refs.npz"
    proc = subprocess.run([sys.executable, "-c", code, str(src), str(dest), task, fmt, repr(tolerance), str(refs_file)],
                          capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    if "error" in answer:
        raise RecipeError(answer["error"])
    if proc.returncode != 0 or "exported" not in answer or not refs_file.is_file():
        tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1][:200]
        raise RecipeError(f"ONNX export of {Path(src).name} ({task}) failed in its process: {tail}")
    try:  # ONNX Runtime's check here, after the exporting process has given its memory back
        diff = verify_export(dest, refs_file, task, tolerance, Path(src).name)
    finally:
        refs_file.unlink(missing_ok=True)
    return dest / ONNX_FILE, diff


def config_namespace(config_folder: Path) -> Any:
    """A folder's config.json as an attribute object (what `verification_inputs` reads), without
    importing transformers."""
    from types import SimpleNamespace

    from relman.modelio.loading import read_config

    cfg = SimpleNamespace(**read_config(config_folder))
    if not hasattr(cfg, "vocab_size") and hasattr(cfg, "n_vocab"):
        cfg.vocab_size = cfg.n_vocab
    return cfg


def onnx_check_inputs(path: Path, task: str, config_folder: Path) -> list[dict[str, np.ndarray]]:
    """Verification feeds for an ONNX model: shapes from its config.json, names from the graph."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    return verification_inputs(config_namespace(config_folder), task, names)


def require_task(src: Any) -> str:
    if not src.task:
        raise RecipeError(f"{src.version.ref} has no task recorded; re-import it with --task so it can be exported")
    return src.task
