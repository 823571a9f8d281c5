"""NumPy .npz arrays -> image Dataset. Keys are explicit; pickled objects are refused.

`x_key` names an N x H x W (greyscale) or N x H x W x C array: uint8, other integers within
0..255, or floats within [0, 1] (scaled to 0..255). `y_key` (optional) names N labels
(integers or strings); `group_col` / `split_col` name optional N-long arrays.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from relman.data.dataset import Dataset
from relman.data.labels import encode_labels
from relman.data.mapping import ColumnMapping
from relman.data.splits import check_split_values
from relman.errors import DatasetError


from relman.data.limits import DEFAULT_MAX_BYTES, max_dataset_bytes  # noqa: F401 (re-exported)


def check_npz_size(path: Path, where: str) -> None:
    """Refuse an archive whose arrays would decompress beyond the cap, reading only the zip
    directory and each array's header (a 1 MB file can declare gigabytes of zeros)."""
    limit = max_dataset_bytes()
    total = 0
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as f:
                    try:
                        version = np.lib.format.read_magic(f)
                        read = np.lib.format.read_array_header_1_0 if version == (1, 0) \
                            else np.lib.format.read_array_header_2_0
                        shape, _, dtype = read(f)
                    except (ValueError, OSError, SyntaxError):
                        continue  # np.load reports it
                n = 1
                for d in shape:
                    n *= int(d)
                total += max(n * dtype.itemsize, info.file_size)
                if total > limit:
                    raise DatasetError(f"{where}: arrays would take {total:,}+ bytes once decompressed, over the "
                                       f"{limit:,}-byte cap (RELMAN_MAX_DATASET_BYTES)")
    except (zipfile.BadZipFile, OSError):
        return  # np.load gives the message


def read_npz(path: Path, mapping: ColumnMapping, *, name: str, labels: Sequence[str] | None = None,
             where: str | None = None) -> Dataset:
    where = where or Path(path).name
    if Path(path).stat().st_size == 0:
        raise DatasetError(f"{where}: file is empty")
    check_npz_size(Path(path), where)
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DatasetError(f"{where}: not a readable .npz file ({str(e).splitlines()[0]})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DatasetError(f"{where}: a single .npy array, not an .npz archive of named arrays")
    with npz:
        keys = list(npz.files)
        if not keys:
            raise DatasetError(f"{where}: file holds no arrays")
        if mapping.x_key is None:
            raise DatasetError(f"{where}: give the key of the image array (--x-key; keys: {', '.join(keys)})")

        def get(key: str, role: str) -> np.ndarray:
            if key not in keys:
                raise DatasetError(f"{where}: no {role} array '{key}' (keys: {', '.join(keys)})")
            try:
                return npz[key]
            except ValueError as e:
                raise DatasetError(f"{where}: array '{key}' holds Python objects, which are refused ({e})") from None

        x = get(mapping.x_key, "image")
        y = get(mapping.y_key, "label") if mapping.y_key else None
        g = get(mapping.group_col, "group") if mapping.group_col else None
        s = get(mapping.split_col, "split") if mapping.split_col else None
    images = _images(x, where, mapping.x_key)
    n = images.shape[0]
    for arr, key in ((y, mapping.y_key), (g, mapping.group_col), (s, mapping.split_col)):
        if arr is not None and (arr.ndim != 1 or arr.shape[0] != n):
            raise DatasetError(f"{where}: array '{key}' has shape {arr.shape}, expected ({n},) like the images")
    row = lambda i: f"row {i}"  # noqa: E731
    y_idx, names = (None, [])
    if y is not None:
        if y.dtype.kind == "f" and np.isnan(y).any():
            first = int(np.flatnonzero(np.isnan(y))[0])
            raise DatasetError(f"{where} row {first}: label array '{mapping.y_key}' is NaN")
        y_idx, names = encode_labels(y.tolist(), labels, where=where, column=mapping.y_key, row_name=row)
    groups = None
    if g is not None:
        groups = np.array([str(v) for v in g.tolist()], dtype=object)
    split = check_split_values(s.tolist(), where=where, column=mapping.split_col, row_name=row) if s is not None \
        else None
    return Dataset(name=name, kind="image", images=images, labels=y_idx, label_names=names, groups=groups,
                   split=split)


def _images(x: np.ndarray, where: str, key: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise DatasetError(f"{where}: array '{key}' has shape {x.shape}; expected N x H x W or N x H x W x C "
                           "images with C in 1, 3, 4")
    if x.shape[0] == 0:
        raise DatasetError(f"{where}: array '{key}' holds no images")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype.kind in "iu":
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise DatasetError(f"{where}: integer array '{key}' has values {lo}..{hi}, outside 0..255")
        return x.astype(np.uint8)
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise DatasetError(f"{where}: array '{key}' holds NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise DatasetError(f"{where}: float array '{key}' has values {lo:g}..{hi:g}, outside [0, 1]")
        return np.round(x * 255).astype(np.uint8)
    raise DatasetError(f"{where}: array '{key}' has dtype {x.dtype}, not numeric image data")
