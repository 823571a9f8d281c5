"""An image folder (one sub-folder per class) -> image Dataset, uint8 N x H x W x C.

Images are decoded with Pillow. Every image must have the same size unless `image_size` is
given (then each is resized to it). When every image is greyscale the dataset stays C=1;
otherwise all are converted to RGB (C=3; alpha dropped). Files and classes are read in sorted
order, so the row order is the same on every machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from relman.data.dataset import Dataset
from relman.data.labels import encode_labels
from relman.data.mapping import ColumnMapping
from relman.errors import DatasetError

GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def folder_entries(root: Path) -> list[tuple[str, Path]]:
    """(relative 'class/file' path, file) for every file in the class sub-folders."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    entries = []
    for cls in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(cls.rglob("*")):
            rel = f.relative_to(root).as_posix()
            if f.is_file() and not any(part.startswith(".") for part in f.relative_to(root).parts):
                try:
                    rel.encode("utf-8")
                except UnicodeEncodeError:
                    raise DatasetError(f"{root}: the file name {rel!r} is not UTF-8; rename it") from None
                entries.append((rel, f))
    if not entries:
        raise DatasetError(f"{root}: no images (expected one sub-folder per class holding image files)")
    return entries


def read_image_entries(entries: Sequence[tuple[str, Path]], mapping: ColumnMapping, *, name: str,
                       labels: Sequence[str] | None = None, where: str = "") -> Dataset:
    """Decode `entries` ((relative path, file) pairs; the first path part is the class)."""
    if mapping.split_col is not None:
        raise DatasetError(f"{where}: an image folder has no split column; use split fractions instead")
    prefix = f"{where}/" if where else ""
    if labels is not None:
        for rel, _ in entries:
            cls = rel.split("/", 1)[0]
            if cls not in [str(x) for x in labels]:
                raise DatasetError(f"{prefix}{rel}: class folder '{cls}' is not one of the given labels "
                                   f"({', '.join(map(str, labels))})")
    if not entries:
        raise DatasetError(f"{where}: no images")
    images = decode_images([(f"{prefix}{rel}", path) for rel, path in entries], mapping.image_size)
    classes = [rel.split("/", 1)[0] for rel, _ in entries]
    y, label_names = encode_labels(classes, labels, where=where or "image folder", column="<folder>",
                                   row_name=lambda i: entries[i][0])
    return Dataset(name=name, kind="image", images=images, labels=y, label_names=label_names,
                   meta={"files": [rel for rel, _ in entries]})


def _open(source: Path | bytes):  # -> PIL.Image.Image (lazy: header only until load())
    import io

    from PIL import Image

    return Image.open(io.BytesIO(source) if isinstance(source, bytes | bytearray) else source)


def decode_images(sources: Sequence[tuple[str, Path | bytes]], size: tuple[int, int] | None) -> np.ndarray:
    """Decode (name, file or encoded bytes) pairs into one uint8 N x H x W x C array.

    Two passes keep memory at one decoded image: headers first (mode and size, so the channel
    count and the size check are known up front), then decode and convert one by one. A file
    that does not decode is a `DatasetError` naming it."""
    from PIL import Image, UnidentifiedImageError

    bad = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)

    def fail(label: str, e: BaseException) -> DatasetError:
        return DatasetError(f"{label}: not a decodable image ({(str(e).splitlines() or [''])[0] or type(e).__name__})")

    heads = []
    for label, src in sources:
        try:
            with _open(src) as im:
                heads.append((im.mode, im.size))
        except bad as e:
            raise fail(label, e) from None
    grey = all(mode in GREY_MODES for mode, _ in heads)
    target_wh = (size[1], size[0]) if size else heads[0][1]
    if size is None:
        for (label, _), (_, wh) in zip(sources, heads):
            if wh != target_wh:
                raise DatasetError(f"{label}: image is {wh[1]}x{wh[0]} but {sources[0][0]} is "
                                   f"{target_wh[1]}x{target_wh[0]} (give an image size to resize all)")
    out = np.empty((len(sources), target_wh[1], target_wh[0], 1 if grey else 3), dtype=np.uint8)
    for i, (label, src) in enumerate(sources):
        try:
            with _open(src) as im:
                im = im.convert("L") if grey else im.convert("RGB")
                if im.size != target_wh:
                    im = im.resize(target_wh, Image.Resampling.BILINEAR)
                a = np.asarray(im, dtype=np.uint8)
        except bad as e:
            raise fail(label, e) from None
        out[i] = a[:, :, None] if a.ndim == 2 else a
    return out
