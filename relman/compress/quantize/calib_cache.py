"""Activation statistics gathered on calibration data, cached per (model, dataset, settings).

Smoothing and the output-based sensitivity analysis both need to run the FP32 graph over the
calibration batches and read intermediate tensors (per-channel max |x| of LayerNorm outputs).
An `optimize` search tries several INT8 candidates of the same parent on the same dataset, so
the ranges are computed once and kept in the catalog's `cache/calibration/` folder under a key
made of the parent's manifest sha256, the dataset's sha256 (or "synthetic") and the settings
(samples, batch, max length, tensor names, graph). The cache is only an accelerator: a file
that cannot be read is ignored and recomputed, never trusted half-written (written to a temp
name and renamed), and read with `allow_pickle=False`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np


def cache_key(model_sha: str, dataset_sha: str, settings: dict[str, Any]) -> str:
    """sha256 of the three parts of a calibration's identity."""
    blob = json.dumps({"model": model_sha, "dataset": dataset_sha, "settings": settings}, sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class CalibrationCache:
    """A folder of `<key>.npz` files of named arrays."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        p = self.path(key)
        if not p.is_file():
            self.misses += 1
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                names = json.loads(str(z["__names__"]))
                out = {name: np.asarray(z[f"a{i}"]) for i, name in enumerate(names)}
        except Exception:  # unreadable cache: recompute rather than fail the recipe
            self.misses += 1
            return None
        self.hits += 1
        return out

    def put(self, key: str, arrays: dict[str, np.ndarray]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        names = list(arrays)
        tmp = self.root / f".{key}.{os.getpid()}.partial.npz"
        try:
            np.savez(tmp, __names__=np.asarray(json.dumps(names)),
                     **{f"a{i}": np.asarray(arrays[n]) for i, n in enumerate(names)})
            tmp.replace(self.path(key))
        finally:
            tmp.unlink(missing_ok=True)
        return self.path(key)


def for_catalog(catalog: Any) -> CalibrationCache:
    return CalibrationCache(Path(catalog.root) / "cache" / "calibration")


def channel_absmax(model: Any, feeds: Iterable[dict[str, np.ndarray]], tensors: list[str]) -> dict[str, np.ndarray]:
    """Per-channel (last axis) max |x| of the named intermediate tensors of an in-memory ONNX
    model over all feeds. The tensors are added as graph outputs of a copy of the model."""
    import onnx
    import onnxruntime as ort

    if not tensors:
        return {}
    m = onnx.ModelProto()
    m.CopyFrom(model)
    known = {o.name for o in m.graph.output}
    for name in tensors:
        if name not in known:
            m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep the tensors observable
    sess = ort.InferenceSession(m.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in sess.get_inputs()}
    out: dict[str, np.ndarray] = {}
    for feed in feeds:
        values = sess.run(tensors, {k: v for k, v in feed.items() if k in wanted})
        for name, v in zip(tensors, values):
            mask = feed.get("attention_mask")
            a = np.abs(v.astype(np.float32))
            if mask is not None and a.ndim == 3 and a.shape[:2] == mask.shape:
                a = a * mask[..., None]  # padding positions carry no real activation
            cur = a.reshape(-1, a.shape[-1]).max(axis=0)
            out[name] = cur if name not in out else np.maximum(out[name], cur)
    return out
