"""What changed between two versions' weights: per tensor, and in the architecture.

Netron users ask for comparing two models (netron#705); no registry shows it. A release
decision wants to know *where* a child differs from its parent: which layers a fine-tune moved
and how far (relative norm of the difference, cosine), what pruning zeroed (sparsity before and
after), what quantisation or surgery changed (dtype, shape), what exists in only one of them;
and for reshaped children the architecture itself (config keys, relman's surgery record).

Tensors are matched by name and read one pair at a time (safetensors slices, or one ONNX
initialiser with its external data), so memory stays near the two largest tensors whatever the
models' size. Only headers and data that relman's own readers checked are read
(`relman.modelio.inspect.read_safetensors_header`: truncation, overlaps, sizes; ONNX external
data paths must stay inside the folder). Formats without plain weight tensors are refused in
one line rather than guessed at.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from relman.errors import RelmanError

SAFETENSORS_FORMATS = ("hf", "hf-reshaped", "safetensors", "peft-adapter")
ONNX_FORMATS = ("onnx",)
CHANGED_AT = 1e-7  # relative norm above which a tensor counts as changed (float32 round-off is ~1e-7)


class DiffError(RelmanError):
    """Two versions whose weights cannot be compared (format, unreadable files)."""


@dataclass
class TensorDiff:
    name: str
    status: str  # "changed", "unchanged", "reshaped", "retyped", "only_a", "only_b"
    shape_a: list[int] | None = None
    shape_b: list[int] | None = None
    dtype_a: str | None = None
    dtype_b: str | None = None
    relative_norm: float | None = None  # ||b - a|| / ||a||
    cosine: float | None = None
    max_abs_diff: float | None = None
    sparsity_a: float | None = None  # fraction of exact zeros
    sparsity_b: float | None = None


@dataclass
class WeightDiff:
    tensors: list[TensorDiff]
    config: list[dict[str, Any]] = field(default_factory=list)  # [{"key", "a", "b"}]
    formats: tuple[str, str] = ("", "")

    def summary(self) -> dict[str, int]:
        out = {k: 0 for k in ("changed", "unchanged", "reshaped", "retyped", "only_a", "only_b")}
        for t in self.tensors:
            out[t.status] += 1
        out["config_changes"] = len(self.config)
        return out

    def ranked(self) -> list[TensorDiff]:
        """Most different first: structural changes, then by relative norm, unchanged last."""
        order = {"reshaped": 0, "retyped": 1, "only_a": 2, "only_b": 2, "changed": 3, "unchanged": 4}
        return sorted(self.tensors, key=lambda t: (order[t.status], -(t.relative_norm or 0.0), t.name))

    def as_dict(self) -> dict[str, Any]:
        return {"formats": list(self.formats), "summary": self.summary(),
                "tensors": [asdict(t) for t in self.ranked()], "config": self.config}


# -- reading ------------------------------------------------------------------------------------
class _Tensors:
    """name -> (shape, dtype) of a folder's weights, and a loader for one tensor."""

    def __init__(self, folder: Path, fmt: str) -> None:
        self.folder, self.fmt = folder, fmt
        self.meta: dict[str, tuple[list[int], str]] = {}
        self._where: dict[str, Any] = {}
        if fmt in SAFETENSORS_FORMATS:
            self._index_safetensors()
        elif fmt in ONNX_FORMATS:
            self._index_onnx()
        else:
            raise DiffError(f"weights of format '{fmt}' cannot be compared (comparable: "
                            f"{', '.join(SAFETENSORS_FORMATS + ONNX_FORMATS)})")

    def _index_safetensors(self) -> None:
        from relman.modelio.inspect import read_safetensors_header

        files = sorted(self.folder.rglob("*.safetensors"))
        if not files:
            raise DiffError(f"{self.folder.name}: no .safetensors weights to compare")
        for f in files:
            try:
                header = read_safetensors_header(f)
            except (ValueError, OSError, RelmanError) as e:
                raise DiffError(f"{f.name}: {e}") from None
            prefix = "" if f.parent == self.folder else f"{f.parent.relative_to(self.folder).as_posix()}/"
            for name, info in header.items():
                if name == "__metadata__" or not isinstance(info, dict):
                    continue
                self.meta[prefix + name] = (list(info["shape"]), str(info["dtype"]).lower())
                self._where[prefix + name] = (f, name)

    def _index_onnx(self) -> None:
        import onnx

        path = self.folder / "model.onnx"
        if not path.is_file():
            raise DiffError(f"{self.folder.name}: no model.onnx to compare")
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # noqa: BLE001 - protobuf raises several types for a corrupt file
            raise DiffError(f"{path.name}: not a readable ONNX model ({str(e).splitlines()[0][:200]})") from None
        for t in model.graph.initializer:
            self.meta[t.name] = (list(t.dims), onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name)
            self._where[t.name] = t

    def load(self, name: str) -> np.ndarray:
        if self.fmt in SAFETENSORS_FORMATS:
            from safetensors import safe_open

            f, key = self._where[name]
            if self.meta[name][1] != "bf16":
                with safe_open(str(f), framework="numpy") as h:
                    return np.asarray(h.get_tensor(key))
            with safe_open(str(f), framework="pt") as h:  # bfloat16 has no numpy dtype: through torch
                return h.get_tensor(key).float().numpy()
        return self._load_onnx(self._where[name])

    def _load_onnx(self, tensor: Any) -> np.ndarray:
        from onnx import numpy_helper
        from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

        if uses_external_data(tensor):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            target = (self.folder / location).resolve()
            if not target.is_relative_to(self.folder.resolve()) or not target.is_file():
                raise DiffError(f"initialiser '{tensor.name}' names external data outside its folder or missing: "
                                f"'{location}'")
            import copy

            tensor = copy.deepcopy(tensor)
            load_external_data_for_tensor(tensor, str(self.folder))
        return numpy_helper.to_array(tensor)


def _config(folder: Path) -> dict[str, Any]:
    from relman import jsonlimits

    path = folder / "config.json"
    if not path.is_file():
        return {}
    try:
        data = jsonlimits.loads(path.read_text(encoding="utf-8"), f"{folder.name}/config.json", error=DiffError)
    except (OSError, UnicodeDecodeError) as e:
        raise DiffError(f"{folder.name}/config.json: {e}") from None
    return data if isinstance(data, dict) else {}


def _flat(d: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(d, dict):
        for k in sorted(d):
            yield from _flat(d[k], f"{prefix}{k}.")
    else:
        yield prefix[:-1], d


def config_diff(a: Path, b: Path) -> list[dict[str, Any]]:
    """Keys of config.json (nested keys dotted, relman's surgery record included) whose values
    differ; bookkeeping keys (transformers' version, dtype spelling) are left out."""
    skip = ("transformers_version", "_name_or_path")
    fa, fb = dict(_flat(_config(a))), dict(_flat(_config(b)))
    out = []
    for key in sorted(set(fa) | set(fb)):
        if key.split(".")[0] in skip:
            continue
        va, vb = fa.get(key), fb.get(key)
        if va != vb:
            out.append({"key": key, "a": va, "b": vb})
    return out


# -- comparing ----------------------------------------------------------------------------------
def _compare(name: str, x: np.ndarray, y: np.ndarray) -> TensorDiff:
    a = x.astype(np.float64, copy=False).ravel()
    b = y.astype(np.float64, copy=False).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    d = float(np.linalg.norm(b - a))
    rel = d / na if na > 0 else (0.0 if d == 0 else math.inf)
    cos = float(a @ b / (na * nb)) if na > 0 and nb > 0 else (1.0 if d == 0 else 0.0)
    return TensorDiff(name=name, status="changed" if rel > CHANGED_AT else "unchanged",
                      relative_norm=rel, cosine=cos, max_abs_diff=float(np.max(np.abs(b - a))) if a.size else 0.0,
                      sparsity_a=float(np.mean(a == 0)) if a.size else 0.0,
                      sparsity_b=float(np.mean(b == 0)) if b.size else 0.0)


def diff_folders(a: Path, fmt_a: str, b: Path, fmt_b: str,
                 on_tensor: Callable[[int, int], None] | None = None) -> WeightDiff:
    """Compare the weights of two version folders tensor by tensor (matched by name)."""
    ta, tb = _Tensors(Path(a), fmt_a), _Tensors(Path(b), fmt_b)
    names = sorted(set(ta.meta) | set(tb.meta))
    out: list[TensorDiff] = []
    for i, name in enumerate(names):
        ma, mb = ta.meta.get(name), tb.meta.get(name)
        if ma is None or mb is None:
            shape, dtype = (mb or ma)  # type: ignore[misc]
            out.append(TensorDiff(name=name, status="only_b" if ma is None else "only_a",
                                  shape_a=ma[0] if ma else None, shape_b=mb[0] if mb else None,
                                  dtype_a=ma[1] if ma else None, dtype_b=mb[1] if mb else None))
        elif ma[0] != mb[0]:
            out.append(TensorDiff(name=name, status="reshaped", shape_a=ma[0], shape_b=mb[0],
                                  dtype_a=ma[1], dtype_b=mb[1]))
        else:
            t = _compare(name, ta.load(name), tb.load(name))
            t.shape_a, t.shape_b, t.dtype_a, t.dtype_b = ma[0], mb[0], ma[1], mb[1]
            if ma[1] != mb[1]:
                t.status = "retyped"
            out.append(t)
        if on_tensor is not None:
            on_tensor(i + 1, len(names))
    return WeightDiff(tensors=out, config=config_diff(Path(a), Path(b)), formats=(fmt_a, fmt_b))


def to_json(diff: WeightDiff) -> str:
    return json.dumps(diff.as_dict(), sort_keys=True)
