"""Rewriting an ONNX model whose weights live in external data, one tensor at a time.

Why: a model past a few GB cannot be loaded, converted and saved whole (2x the weights in
memory at best, and protobuf refuses to serialise more than 2 GB). The streaming rewrites
(relman.compress.quantize.int4_stream, the FP16 path of relman.compress.quantize.half) parse only the weightless
graph, read each tensor from the source's data file (paths checked to stay in its folder,
truncation detected), and append the tensors they keep or make to one new page-aligned
model.onnx.data; `finish` renames the temp files into place, or folds a small result into one
self-contained model.onnx.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from relman.errors import RecipeError

ALIGN = 4096  # data offsets page-aligned, so onnxruntime can memory-map them
INLINE_BYTES = 64 << 20  # a result smaller than this is saved as one self-contained model.onnx


def _np_dtype(t: Any) -> np.dtype:
    import onnx

    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))


class TensorSource:
    """Reads one initializer at a time from the source model's folder (external data checked to
    stay inside it)."""

    def __init__(self, model_path: Path) -> None:
        self.base = model_path.parent.resolve()

    def location(self, t: Any) -> tuple[Path, int, int | None]:
        from onnx.external_data_helper import ExternalDataInfo

        info = ExternalDataInfo(t)
        path = (self.base / info.location).resolve()
        if self.base not in path.parents:
            raise RecipeError(f"external data of tensor {t.name} points outside the model's folder")
        return path, int(info.offset or 0), (int(info.length) if info.length is not None else None)

    def array(self, t: Any, dtype: Any = None) -> np.ndarray:
        """The tensor's values; `dtype` reads external bytes as another type than the proto now
        says (a converter changed its data_type before its data was read)."""
        from onnx import numpy_helper
        from onnx.external_data_helper import uses_external_data

        if not uses_external_data(t):
            return numpy_helper.to_array(t)
        path, offset, _ = self.location(t)
        dtype = np.dtype(dtype) if dtype is not None else _np_dtype(t)
        count = int(np.prod(t.dims)) if t.dims else 1
        arr = np.fromfile(path, dtype=dtype, count=count, offset=offset)
        if arr.size != count:
            raise RecipeError(f"external data of tensor {t.name} is truncated ({arr.size} of {count} values)")
        return arr.reshape(tuple(t.dims))


class TensorWriter:
    """Appends tensors to the new data file, page-aligned, and points their protos at it."""

    def __init__(self, path: Path, location: str) -> None:
        self.out = open(path, "wb")
        self.location = location

    def _point(self, t: Any, offset: int, length: int) -> None:
        del t.external_data[:]
        t.ClearField("raw_data")
        t.data_location = 1  # TensorProto.EXTERNAL
        for k, v in (("location", self.location), ("offset", str(offset)), ("length", str(length))):
            entry = t.external_data.add()
            entry.key, entry.value = k, v

    def _align(self) -> int:
        offset = self.out.tell()
        pad = (-offset) % ALIGN
        self.out.write(b"\0" * pad)
        return offset + pad

    def add(self, name: str, arr: np.ndarray, *, inline: bool = False) -> Any:
        """`inline` keeps the values in the graph: shape inputs must be (onnxruntime's shape
        inference cannot read external data)."""
        import onnx
        from onnx import numpy_helper

        if inline:
            return numpy_helper.from_array(np.ascontiguousarray(arr), name)
        t = onnx.TensorProto()
        t.name = name
        t.data_type = onnx.helper.np_dtype_to_tensor_dtype(arr.dtype)
        t.dims.extend(arr.shape)
        offset = self._align()
        data = np.ascontiguousarray(arr)
        data.tofile(self.out)
        self._point(t, offset, data.nbytes)
        return t

    def copy(self, t: Any, src: TensorSource) -> None:
        """Move an external tensor's bytes over in 64 MiB chunks (never the whole tensor)."""
        path, start, length = src.location(t)
        left = length if length is not None else path.stat().st_size - start
        offset = self._align()
        written = 0
        with open(path, "rb") as f:
            f.seek(start)
            while left > 0:
                chunk = f.read(min(left, 64 << 20))
                if not chunk:
                    raise RecipeError(f"external data of tensor {t.name} is truncated")
                self.out.write(chunk)
                written += len(chunk)
                left -= len(chunk)
        self._point(t, offset, written)

    def close(self) -> None:
        self.out.close()


def finish(tmp_model: Path, tmp_data: Path, folder: Path, inline_below: int = INLINE_BYTES) -> list[str]:
    """Rename the temp files into place; a small result becomes one self-contained model.onnx."""
    import onnx

    from relman.compress.export.onnx_export import ONNX_DATA, ONNX_FILE

    if tmp_data.stat().st_size < inline_below:
        staging = folder / ".int4-inline"
        staging.mkdir(exist_ok=True)
        try:
            os.replace(tmp_data, staging / ONNX_DATA)
            os.replace(tmp_model, staging / ONNX_FILE)
            whole = onnx.load(str(staging / ONNX_FILE))  # loads the small data file
            from onnx.external_data_helper import convert_model_from_external_data

            convert_model_from_external_data(whole)
            partial = folder / (ONNX_FILE + ".partial")
            onnx.save_model(whole, str(partial))
            partial.replace(folder / ONNX_FILE)
        finally:
            for p in staging.iterdir():
                p.unlink()
            staging.rmdir()
        return [ONNX_FILE]
    tmp_data.replace(folder / ONNX_DATA)
    tmp_model.replace(folder / ONNX_FILE)
    return [ONNX_FILE, ONNX_DATA]


class ModelWriter(TensorWriter):
    """folder/model.onnx (+ model.onnx.data) written under temp names: `add` / `copy` tensors,
    then `save(model)` renames them into place (`finish`). As a context manager, an error or a
    missing save leaves nothing behind."""

    def __init__(self, folder: Path, inline_below: int = INLINE_BYTES) -> None:
        from relman.compress.export.onnx_export import ONNX_DATA, ONNX_FILE

        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.inline_below = folder, inline_below
        self.tmp_model, self.tmp_data = folder / (ONNX_FILE + ".partial"), folder / (ONNX_DATA + ".partial")
        self.files: list[str] = []
        super().__init__(self.tmp_data, ONNX_DATA)

    def save(self, model: Any) -> list[str]:
        import onnx

        self.close()
        onnx.save_model(model, str(self.tmp_model))
        self.files = finish(self.tmp_model, self.tmp_data, self.folder, self.inline_below)
        return self.files

    def __enter__(self) -> "ModelWriter":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close()
        if exc_type is not None or not self.files:
            self.tmp_model.unlink(missing_ok=True)
            self.tmp_data.unlink(missing_ok=True)
